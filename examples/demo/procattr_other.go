//go:build !unix

package main

import "syscall"

// sysProcAttr needs nothing special here.
func sysProcAttr() *syscall.SysProcAttr { return nil }
