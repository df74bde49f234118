package harness

import (
	"bytes"
	"encoding/binary"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
)

// CNIBinDir is where Debian's containernetworking-plugins installs the CNI
// plugins.
const CNIBinDir = "/usr/lib/cni"

// CNINetwork is a CNI bridge network of one test: a conflist in a conf dir
// of its own, a bridge link and a private /24 nobody else routes.
type CNINetwork struct {
	// Name is the network's and the bridge link's name.
	Name string
	// Subnet is the pods' subnet; Gateway the bridge's address in it.
	Subnet  *net.IPNet
	Gateway net.IP
	// ConfDir holds the network's conflist (CRIConfig.WithCNIConfDir).
	ConfDir string

	createdDirs []string
}

// Where libcni and host-local keep state by default.
const (
	cniStateDir   = "/var/lib/cni"
	cniNetworks   = "/var/lib/cni/networks"
	cniResultsDir = "/var/lib/cni/results"
)

var ipForward struct {
	sync.Mutex
	users int
	orig  []byte
}

const ipForwardPath = "/proc/sys/net/ipv4/ip_forward"

// NewCNIBridge writes a bridge conflist (host-local IPAM on a random
// private /24 that no route on the host covers; no masquerading: pods talk
// only to the host and to each other) into a new conf dir, and arranges
// for the bridge link, CNI's state for the network and net.ipv4.ip_forward
// (which the bridge plugin turns on) to be restored when t ends, failing t
// if a veth, an allocated IP, a CNI result or an iptables rule is left.
func NewCNIBridge(t T) *CNINetwork {
	t.Helper()
	n := &CNINetwork{Name: "nbcni-" + randomHex(3)}
	for _, d := range []string{cniStateDir, cniNetworks, cniResultsDir} {
		if _, err := os.Stat(d); err != nil {
			n.createdDirs = append(n.createdDirs, d)
		}
	}
	routes := hostRoutes(t)
	for i := 0; n.Subnet == nil; i++ {
		if i == 100 {
			t.Fatalf("no free private /24 in 10.200.0.0/13 after 100 tries")
		}
		cand := &net.IPNet{IP: net.IPv4(10, byte(200+rand.IntN(8)), byte(rand.IntN(256)), 0).To4(), Mask: net.CIDRMask(24, 32)}
		free := true
		for _, r := range routes {
			if r.Contains(cand.IP) || cand.Contains(r.IP) {
				free = false
				break
			}
		}
		if free && !linkExists(n.Name) {
			n.Subnet = cand
		}
	}
	n.Gateway = net.IPv4(n.Subnet.IP[0], n.Subnet.IP[1], n.Subnet.IP[2], 1).To4()
	dir, err := os.MkdirTemp("", "nbcni-conf-")
	if err != nil {
		t.Fatalf("%v", err)
	}
	n.ConfDir = dir

	ipForward.Lock()
	if ipForward.users == 0 {
		ipForward.orig, _ = os.ReadFile(ipForwardPath)
	}
	ipForward.users++
	ipForward.Unlock()
	t.Cleanup(func() { n.teardown(t) })

	conf := map[string]any{
		"cniVersion": "1.0.0",
		"name":       n.Name,
		"plugins": []any{
			map[string]any{
				"type":        "bridge",
				"bridge":      n.Name,
				"isGateway":   true,
				"ipMasq":      false,
				"hairpinMode": true,
				"ipam": map[string]any{
					"type":   "host-local",
					"ranges": [][]map[string]string{{{"subnet": n.Subnet.String(), "gateway": n.Gateway.String()}}},
				},
			},
		},
	}
	writeJSON(t, filepath.Join(dir, "10-"+n.Name+".conflist"), conf)
	return n
}

// Contains reports whether ip is a pod address on the network.
func (n *CNINetwork) Contains(ip string) bool {
	p := net.ParseIP(ip)
	return p != nil && n.Subnet.Contains(p) && !p.Equal(n.Gateway)
}

// leftovers lists what pods left on the network: veths on the bridge,
// allocated IPs, cached CNI results, iptables rules naming the network or
// its subnet.
func (n *CNINetwork) leftovers() []string {
	var left []string
	for _, ifc := range listDir(filepath.Join("/sys/class/net", n.Name, "brif")) {
		left = append(left, "veth "+ifc+" on bridge "+n.Name)
	}
	for _, f := range listDir(filepath.Join(cniNetworks, n.Name)) {
		if f != "lock" && !strings.HasPrefix(f, "last_reserved_ip") {
			left = append(left, "IP allocation "+filepath.Join(cniNetworks, n.Name, f))
		}
	}
	for _, f := range listDir(cniResultsDir) {
		if strings.HasPrefix(f, n.Name+"-") {
			left = append(left, "CNI result "+filepath.Join(cniResultsDir, f))
		}
	}
	for _, r := range n.iptablesRules() {
		left = append(left, "iptables rule -t "+r.table+" "+strings.Join(r.args, " "))
	}
	return left
}

func (n *CNINetwork) teardown(t T) {
	for _, l := range n.leftovers() {
		t.Errorf("leak: %s", l)
	}
	for _, r := range n.iptablesRules() {
		args := append([]string{"-t", r.table, "-D"}, r.args[1:]...)
		if out, err := exec.Command("iptables", args...).CombinedOutput(); err != nil {
			t.Errorf("iptables %s: %v: %s", strings.Join(args, " "), err, out)
		}
		if r.chain != "" {
			exec.Command("iptables", "-t", r.table, "-F", r.chain).Run()
			exec.Command("iptables", "-t", r.table, "-X", r.chain).Run()
		}
	}
	for _, ifc := range listDir(filepath.Join("/sys/class/net", n.Name, "brif")) {
		exec.Command("ip", "link", "del", ifc).Run()
	}
	if linkExists(n.Name) {
		if out, err := exec.Command("ip", "link", "del", n.Name).CombinedOutput(); err != nil {
			t.Errorf("removing bridge %s: %v: %s", n.Name, err, out)
		}
	}
	os.RemoveAll(filepath.Join(cniNetworks, n.Name))
	for _, f := range listDir(cniResultsDir) {
		if strings.HasPrefix(f, n.Name+"-") {
			os.Remove(filepath.Join(cniResultsDir, f))
		}
	}
	for i := len(n.createdDirs) - 1; i >= 0; i-- {
		os.Remove(n.createdDirs[i]) // only if empty: another network may use it
	}
	os.RemoveAll(n.ConfDir)

	ipForward.Lock()
	ipForward.users--
	if ipForward.users == 0 && ipForward.orig != nil {
		if cur, _ := os.ReadFile(ipForwardPath); !bytes.Equal(cur, ipForward.orig) {
			if err := os.WriteFile(ipForwardPath, ipForward.orig, 0o644); err != nil {
				t.Errorf("restoring %s: %v", ipForwardPath, err)
			}
		}
	}
	ipForward.Unlock()

	if linkExists(n.Name) {
		t.Errorf("leak: bridge %s still exists", n.Name)
	}
}

// hostRoutes returns the destinations of the host's IPv4 routes (main
// table) but the default route.
func hostRoutes(t T) []*net.IPNet {
	t.Helper()
	b, err := os.ReadFile("/proc/net/route")
	if err != nil {
		t.Fatalf("%v", err)
	}
	var routes []*net.IPNet
	for _, line := range strings.Split(string(b), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) < 8 {
			continue
		}
		dst, err1 := strconv.ParseUint(f[1], 16, 32)
		mask, err2 := strconv.ParseUint(f[7], 16, 32)
		if err1 != nil || err2 != nil || mask == 0 {
			continue
		}
		ip, m := make(net.IP, 4), make(net.IPMask, 4)
		binary.LittleEndian.PutUint32(ip, uint32(dst))
		binary.LittleEndian.PutUint32(m, uint32(mask))
		routes = append(routes, &net.IPNet{IP: ip, Mask: m})
	}
	return routes
}

func linkExists(name string) bool {
	_, err := os.Lstat(filepath.Join("/sys/class/net", name))
	return err == nil
}
