package api

import (
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/prisma-systems/xspace-mesh/registry"
)

func instanceNotFound(vip, id string) string {
	return fmt.Sprintf("instance %q of VIP %q is not registered (its lease may have expired); register it again with PUT /v1/vips/%s/instances/%s",
		id, vip, vip, id)
}

func (h *handler) listInstances(w http.ResponseWriter, r *http.Request) {
	vip, err := vipParam(r)
	if err != nil {
		h.fail(w, r, err, "")
		return
	}
	insts, err := h.store.Instances(r.Context(), vip)
	if err != nil {
		h.fail(w, r, err, vipNotFound(vip))
		return
	}
	WriteJSON(w, http.StatusOK, instanceList{Instances: h.wireInstances(vip, insts...)})
}

// wireInstances converts stored instances of vip to the API's form, with
// the state of their lease where the registry keeps leases.
func (h *handler) wireInstances(vip string, insts ...registry.Instance) []Instance {
	var leases map[string]registry.Lease
	if l, ok := h.store.(registry.Leaser); ok {
		leases = l.Leases(vip)
	}
	out := make([]Instance, len(insts))
	for i, inst := range insts {
		out[i] = wireInstance(inst)
		out[i].Lease = leases[inst.ID]
	}
	return out
}

func (h *handler) register(w http.ResponseWriter, r *http.Request) {
	vip, id, err := instanceParams(r)
	if err != nil {
		h.fail(w, r, err, "")
		return
	}
	var reg Registration
	body, err := decodeBody(w, r, &reg, jsonTypes)
	if err == nil {
		err = refuseZeros(body)
	}
	if err != nil {
		h.fail(w, r, err, "")
		return
	}
	inst, err := reg.instance(vip, id)
	if err != nil {
		h.fail(w, r, err, "")
		return
	}
	stored, err := h.store.Register(r.Context(), inst)
	if err != nil {
		h.fail(w, r, wireField(err), "")
		return
	}
	h.audit(r, "instance registered", vip, "instance", id, "address", stored.Address, "port", stored.Port,
		"secure_port", stored.SecurePort, "status", stored.Status, "ttl", stored.TTL.D())
	WriteJSON(w, http.StatusOK, wireInstance(stored))
}

// wireField renames the model's fields that have another name on the wire.
func wireField(err error) error {
	var invalid *registry.ValidationError
	if errors.As(err, &invalid) && invalid.Field == "ttl" {
		return errorf(http.StatusBadRequest, CodeInvalidArgument, "ttl_seconds", "ttl_seconds: %s", invalid.Message)
	}
	return err
}

func (h *handler) heartbeat(w http.ResponseWriter, r *http.Request) {
	vip, id, err := instanceParams(r)
	if err != nil {
		h.fail(w, r, err, "")
		return
	}
	if err := h.store.Heartbeat(r.Context(), vip, id); err != nil {
		h.fail(w, r, err, instanceNotFound(vip, id))
		return
	}
	// A renewal changes no state a proxy sees, and comes every few
	// seconds per instance: logged at debug.
	h.logger.Debug("lease renewed", "audit", true, "principal", PrincipalFrom(r.Context()).String(), "vip", vip, "instance", id)
	// Store.Heartbeat does not return the renewal time; this is the time
	// the renewal was acknowledged, within the request's own latency of it.
	WriteJSON(w, http.StatusOK, renewal{RenewedAt: time.Now().UTC()})
}

func (h *handler) setStatus(w http.ResponseWriter, r *http.Request) {
	vip, id, err := instanceParams(r)
	if err != nil {
		h.fail(w, r, err, "")
		return
	}
	var change statusChange
	if _, err := decodeBody(w, r, &change, jsonTypes); err != nil {
		h.fail(w, r, err, "")
		return
	}
	if err := registry.ValidateStatus(change.Status); err != nil {
		h.fail(w, r, err, "")
		return
	}
	inst, err := h.store.SetStatus(r.Context(), vip, id, change.Status)
	if err != nil {
		h.fail(w, r, err, instanceNotFound(vip, id))
		return
	}
	h.audit(r, "instance status set", vip, "instance", id, "status", inst.Status)
	WriteJSON(w, http.StatusOK, wireInstance(inst))
}

func (h *handler) deregister(w http.ResponseWriter, r *http.Request) {
	vip, id, err := instanceParams(r)
	if err != nil {
		h.fail(w, r, err, "")
		return
	}
	if err := h.store.Deregister(r.Context(), vip, id); err != nil {
		h.fail(w, r, err, instanceNotFound(vip, id))
		return
	}
	h.audit(r, "instance deregistered", vip, "instance", id)
	w.WriteHeader(http.StatusNoContent)
}
