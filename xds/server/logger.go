package server

import (
	"fmt"
	"log/slog"

	gcplog "github.com/envoyproxy/go-control-plane/pkg/log"
)

// logAdapter gives go-control-plane, which wants its own logger interface,
// our slog logger. Its messages are debug chatter except for errors.
type logAdapter struct{ l *slog.Logger }

var _ gcplog.Logger = logAdapter{}

func (a logAdapter) Debugf(format string, args ...any) { a.l.Debug(fmt.Sprintf(format, args...)) }
func (a logAdapter) Infof(format string, args ...any)  { a.l.Debug(fmt.Sprintf(format, args...)) }
func (a logAdapter) Warnf(format string, args ...any)  { a.l.Warn(fmt.Sprintf(format, args...)) }
func (a logAdapter) Errorf(format string, args ...any) { a.l.Error(fmt.Sprintf(format, args...)) }
