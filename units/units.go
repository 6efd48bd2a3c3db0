// Package units formats byte counts the way ferry prints them everywhere:
// IEC sizes (1.5 GiB) for people, whole MiB in messages about memory.
package units

import "fmt"

// IEC prints a byte count in IEC units: "512 B", "1.5 GiB".
func IEC(b uint64) string {
	const unit = 1024
	if b < unit {
		return fmt.Sprintf("%d B", b)
	}
	div, exp := uint64(unit), 0
	for n := b / unit; n >= unit; n /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(b)/float64(div), "KMGTPE"[exp])
}

// MiB prints a byte count in whole MiB, rounded down: "512 MiB".
func MiB(b uint64) string { return fmt.Sprintf("%d MiB", b>>20) }
