//go:build e2e

package e2e

import (
	"os/exec"
	"regexp"
	"testing"
)

func virshOut(t *testing.T, host string, args ...string) string {
	t.Helper()
	out, err := exec.Command("virsh", append([]string{"-c", hostURI(host)}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("virsh %v on host%s: %v\n%s", args, host, err, out)
	}
	return string(out)
}

func virshOK(t *testing.T, host string, args ...string) { virshOut(t, host, args...) }

var uuidRE = regexp.MustCompile(`<uuid>[^<]*</uuid>`)

// replaceUUID sets (or adds) the domain UUID of a definition.
func replaceUUID(xml, uuid string) string {
	if uuidRE.MatchString(xml) {
		return uuidRE.ReplaceAllString(xml, "<uuid>"+uuid+"</uuid>")
	}
	return regexp.MustCompile(`(<name>[^<]*</name>)`).ReplaceAllString(xml, "$1<uuid>"+uuid+"</uuid>")
}
