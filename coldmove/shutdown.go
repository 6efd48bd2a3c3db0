package coldmove

import (
	"context"
	"fmt"
	"time"

	"github.com/ferryvm/ferry/virt"
)

// shutdownStep stops a running VM: a guest shutdown request, then after the
// timeout a hard stop if allowed. Undo starts it again.
func (m *Move) shutdownStep() Step {
	stopped := false
	return Step{
		Name: "shutdown",
		Do: func(ctx context.Context) error {
			info, err := m.Domain.Info()
			if err != nil {
				return err
			}
			if !info.State.Active() {
				return nil
			}
			how, err := ShutdownDomain(ctx, m.Domain, *m.Shutdown, func(msg string) { m.progress(Progress{Step: "shutdown", Message: msg}) })
			if how != "" {
				stopped = true
				m.out.Shutdown = how
			}
			return err
		},
		Undo: func(context.Context) error {
			if !stopped {
				return nil
			}
			m.progress(Progress{Step: "rollback", Message: "starting the VM again on the source"})
			return m.Domain.Start()
		},
	}
}

// ShutdownDomain asks the guest to power off and waits up to the policy's
// timeout; then destroys it if Force. It returns "graceful" or "forced"
// once the VM is off.
func ShutdownDomain(ctx context.Context, d virt.Domain, p ShutdownPolicy, say func(string)) (string, error) {
	if say == nil {
		say = func(string) {}
	}
	sd, ok := d.(virt.Shutdowner)
	if ok {
		say(fmt.Sprintf("asking the guest to shut down (waiting up to %s)", p.Timeout))
		if err := sd.Shutdown(); err != nil && !p.Force {
			return "", err
		}
		deadline := time.Now().Add(p.Timeout)
		for time.Now().Before(deadline) {
			info, err := d.Info()
			if err == nil && !info.State.Active() {
				return "graceful", nil
			}
			select {
			case <-ctx.Done():
				return "", context.Cause(ctx)
			case <-time.After(250 * time.Millisecond):
			}
		}
	}
	if !p.Force {
		return "", fmt.Errorf("the guest did not shut down within %s (add --force to stop it hard after the timeout)", p.Timeout)
	}
	say("the guest did not shut down in time: destroying it (--force)")
	if err := d.Destroy(); err != nil {
		if info, ierr := d.Info(); ierr != nil || info.State.Active() {
			return "", err
		}
	}
	return "forced", nil
}
