//go:build e2e

package e2e

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// What crosses the wire: tcpdump captures the lab's migration streams on
// loopback, or with emulated links on the destination host's own interface
// in its network namespace (capturing changes nothing on the machine), and a
// small pcap reader gives the tests the TCP payloads.

// capture is a tcpdump writing a pcap file.
type capture struct {
	cmd  *exec.Cmd
	file string
}

// startCapture records TCP payloads towards host n's migration ports (the
// lab's and ferry's post-copy range, 49152-49279) until stop.
func startCapture(t *testing.T, n string) *capture {
	t.Helper()
	c := &capture{file: filepath.Join(t.TempDir(), "migration.pcap")}
	filter := fmt.Sprintf("tcp and dst host %s.%s and dst portrange 49152-49279", labNet(), n)
	iface := "lo"
	if hostNetns(n) != "" {
		iface = "lab0" // hack/lab-net.sh
	}
	c.cmd = inHostNet(n, "tcpdump", "-i", iface, "-nn", "-U", "-s", "0", "-w", c.file, filter)
	stderr, err := c.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.cmd.Start(); err != nil {
		t.Fatalf("tcpdump: %v (hack/install-deps.sh installs it)", err)
	}
	t.Cleanup(func() { c.stop() })
	// Ready once it says it listens.
	ready := make(chan error, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			if strings.Contains(sc.Text(), "listening on") {
				ready <- nil
				_, _ = io.Copy(io.Discard, stderr)
				return
			}
		}
		ready <- fmt.Errorf("tcpdump ended before listening")
	}()
	select {
	case err := <-ready:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("tcpdump did not start listening within 30 s")
	}
	return c
}

// stop ends the capture (by its PID) and waits for the file to be complete.
func (c *capture) stop() {
	if c.cmd.ProcessState != nil {
		return
	}
	_ = c.cmd.Process.Signal(syscall.SIGINT)
	_ = c.cmd.Wait()
}

// payload stops the capture and returns every TCP payload byte it saw, in
// capture order.
func (c *capture) payload(t *testing.T) []byte {
	t.Helper()
	c.stop()
	data, err := os.ReadFile(c.file)
	if err != nil {
		t.Fatal(err)
	}
	out, err := pcapPayloads(data)
	if err != nil {
		t.Fatalf("reading %s: %v", c.file, err)
	}
	return out
}

// pcapPayloads reads a classic pcap file of Ethernet (Linux loopback) or raw
// IPv4 frames and concatenates their TCP payloads.
func pcapPayloads(data []byte) ([]byte, error) {
	if len(data) < 24 {
		return nil, fmt.Errorf("no pcap header")
	}
	var bo binary.ByteOrder
	switch binary.LittleEndian.Uint32(data) {
	case 0xa1b2c3d4, 0xa1b23c4d:
		bo = binary.LittleEndian
	default:
		bo = binary.BigEndian
	}
	link := bo.Uint32(data[20:])
	var out bytes.Buffer
	for off := 24; off+16 <= len(data); {
		incl := int(bo.Uint32(data[off+8:]))
		off += 16
		if incl < 0 || off+incl > len(data) {
			break
		}
		pkt := data[off : off+incl]
		off += incl
		if link == 1 { // Ethernet
			if len(pkt) < 14 || binary.BigEndian.Uint16(pkt[12:]) != 0x0800 {
				continue
			}
			pkt = pkt[14:]
		}
		if len(pkt) < 20 || pkt[0]>>4 != 4 || pkt[9] != 6 {
			continue
		}
		ihl := int(pkt[0]&0x0f) * 4
		total := int(binary.BigEndian.Uint16(pkt[2:]))
		if total > len(pkt) {
			total = len(pkt)
		}
		if ihl+20 > total {
			continue
		}
		tcp := pkt[ihl:total]
		doff := int(tcp[12]>>4) * 4
		if doff > len(tcp) {
			continue
		}
		out.Write(tcp[doff:])
	}
	return out.Bytes(), nil
}

// plainMarkers are what a clear QEMU migration stream always carries: the
// stream's magic and the guest RAM block's name.
var plainMarkers = [][]byte{[]byte("QEVM"), []byte("pc.ram")}

// tlsRecords counts TLS 1.2/1.3 application-data record headers.
func tlsRecords(b []byte) int { return bytes.Count(b, []byte{0x17, 0x03, 0x03}) }
