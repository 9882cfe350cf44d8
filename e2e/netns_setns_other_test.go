//go:build !linux

package e2e

import "errors"

// inside needs Linux; newNetLab skips every lab test elsewhere first.
func (h *netHost) inside(func() error) error {
	return errors.New("network namespaces need Linux")
}
