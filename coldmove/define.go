package coldmove

import (
	"context"
	"fmt"

	"github.com/ferryvm/ferry/virt"
)

func (m *Move) defineStep() Step {
	return Step{
		Name: "define on the destination",
		Do: func(ctx context.Context) error {
			// The definition sealed before the copy (the guard just saw it unchanged).
			dstXML, err := Rewrite(m.sealed.XML, MappingOf(m.Plan))
			if err != nil {
				return err
			}
			if d, err := m.Dst.LookupDomain(m.Plan.UUID); err == nil {
				info, _ := d.Info()
				return fmt.Errorf("the destination already has a domain with UUID %s (%s)", m.Plan.UUID, info.Name)
			}
			dom, err := m.Dst.DefineXML(dstXML)
			if err != nil {
				return err
			}
			m.dstDom = dom
			m.out.DestXML = dstXML
			if err := VerifyDefinition(dom, m.Plan); err != nil {
				return fmt.Errorf("verify the destination definition: %w", err)
			}
			m.stage(StageDefined)
			m.progress(Progress{Step: "define", Message: "defined on the destination and verified"})
			return nil
		},
		Undo: func(context.Context) error {
			if m.dstDom == nil {
				return nil
			}
			return m.dstDom.Undefine(true) // its NVRAM is removed by the copy's undo
		},
	}
}

// VerifyDefinition checks that the destination's definition is the VM, shut
// off and persistent, with its disks and NVRAM at the copies' paths.
func VerifyDefinition(dom virt.Domain, p *Plan) error {
	info, err := dom.Info()
	if err != nil {
		return err
	}
	if info.UUID != p.UUID || info.Name != p.VM {
		return fmt.Errorf("defined %s (%s), expected %s (%s)", info.Name, info.UUID, p.VM, p.UUID)
	}
	if !info.Persistent || info.State.Active() {
		return fmt.Errorf("the destination copy is %s (persistent %v), expected a persistent shut-off definition", info.State, info.Persistent)
	}
	x, err := dom.XML(false)
	if err != nil {
		return err
	}
	spec, err := virt.ParseSpec(x)
	if err != nil {
		return err
	}
	byTarget := map[string]string{}
	for _, d := range spec.Disks {
		byTarget[d.Target] = d.Source
	}
	for _, a := range p.Artifacts {
		switch a.Kind {
		case KindDisk:
			if got, ok := byTarget[a.Target]; ok && got != "" && got != a.DstPath {
				return fmt.Errorf("disk %s points at %s, expected %s", a.Target, got, a.DstPath)
			}
		case KindNVRAM:
			if spec.NVRAM != "" && spec.NVRAM != a.DstPath {
				return fmt.Errorf("NVRAM points at %s, expected %s", spec.NVRAM, a.DstPath)
			}
		}
	}
	return nil
}
