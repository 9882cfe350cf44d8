package e2e

import (
	"fmt"
	"os"
	"runtime"

	"golang.org/x/sys/unix"
)

// inside runs fn on an OS thread moved into the host's network namespace,
// so that the sockets fn opens belong to the host, and returns fn's error.
func (h *netHost) inside(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		// Never unlocked: the thread exits with the goroutine rather than
		// go back to the runtime's pool inside another namespace.
		runtime.LockOSThread()
		f, err := os.Open("/var/run/netns/" + h.ns)
		if err != nil {
			errc <- err
			return
		}
		defer f.Close()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("setns %s: %w", h.ns, err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}
