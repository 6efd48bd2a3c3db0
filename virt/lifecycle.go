package virt

// Shutdowner is implemented by the Domains Dial returns: a request to the
// guest to power off (ACPI power button, or the guest agent if present). It
// returns at once; the guest may take its time or ignore it. Kept out of
// Domain so the fakes need not grow.
type Shutdowner interface {
	Shutdown() error
}

func (d *domain) Shutdown() error { return wrap(d.op("shut down"), d.d.Shutdown()) }
