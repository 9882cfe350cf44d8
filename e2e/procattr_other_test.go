//go:build !linux

package e2e

import "syscall"

// sysProcAttr needs nothing special here.
func sysProcAttr() *syscall.SysProcAttr { return nil }
