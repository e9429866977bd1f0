package proctest

import "syscall"

// sysProcAttr kills the child when the process that started it dies, so
// credproxy never outlives a benchmark killed with -9.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
