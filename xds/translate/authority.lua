-- xspace-mesh outbound authority mapping, run by Envoy's Lua filter before
-- the on-demand filter and the router. It mirrors names.ClusterForAuthority:
-- the port is stripped, "payments" and "payments.vip" map to the cluster
-- "payments.vip", "payments.svip" to "payments.svip". The cluster goes in
-- x-xspace-cluster, which the route's cluster_header reads, and the bare VIP
-- in x-xspace-vip, which a VIP's own route matches; both overwrite whatever
-- the application sent. Changing request headers makes the Lua filter clear
-- the route cache (its clear_route_cache option, on by default), so the
-- route is chosen on the new headers.

local function valid_vip(vip)
  return #vip >= 1 and #vip <= 63
    and string.find(vip, "^[a-z0-9-]+$") ~= nil
    and string.sub(vip, 1, 1) ~= "-" and string.sub(vip, -1) ~= "-"
end

-- cluster_for returns the VIP and cluster an authority maps to, or nil.
function cluster_for(authority)
  if authority == nil then
    return nil
  end
  local host = string.lower(authority)
  -- "host:port" with a single colon: drop the port, as Go's
  -- net.SplitHostPort does (a bracketed IPv6 host is never a VIP).
  local _, colons = string.gsub(host, ":", "")
  if colons == 1 then
    host = string.match(host, "^([^:]*):")
  end
  local vip, suffix = string.match(host, "^(.-)(%.s?vip)$")
  if vip == nil then
    vip, suffix = host, ".vip"
  end
  if not valid_vip(vip) then
    return nil
  end
  return vip, vip .. suffix
end

function envoy_on_request(handle)
  local headers = handle:headers()
  local authority = headers:get(":authority")
  local vip, cluster = cluster_for(authority)
  if cluster == nil then
    handle:respond({[":status"] = "400", ["content-type"] = "text/plain"},
      "xspace: the request authority " .. string.format("%q", authority or "") ..
      " is not a VIP name; send Host: <vip>, <vip>.vip or <vip>.svip, with any port\n")
    return
  end
  headers:replace("x-xspace-cluster", cluster)
  headers:replace("x-xspace-vip", vip)
end
