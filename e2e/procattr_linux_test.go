package e2e

import "syscall"

// sysProcAttr has the kernel kill a process under test if the test binary
// dies without stopping it (a panic, a timeout).
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
