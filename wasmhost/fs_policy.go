package wasmhost

import (
	"bufio"
	"bytes"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// specialFSMagic are the statfs(2) magic numbers of the kernel's pseudo
// file systems: views of the kernel, of processes (the host's included),
// of devices and of kernel objects. Nothing on them belongs to a guest.
var specialFSMagic = map[int64]string{
	unix.PROC_SUPER_MAGIC:     "proc",
	unix.SYSFS_MAGIC:          "sysfs",
	unix.DEVPTS_SUPER_MAGIC:   "devpts",
	unix.CGROUP_SUPER_MAGIC:   "cgroup",
	unix.CGROUP2_SUPER_MAGIC:  "cgroup2",
	unix.DEBUGFS_MAGIC:        "debugfs",
	unix.TRACEFS_MAGIC:        "tracefs",
	unix.SECURITYFS_MAGIC:     "securityfs",
	unix.BPF_FS_MAGIC:         "bpf",
	0x19800202:                "mqueue",
	unix.HUGETLBFS_MAGIC:      "hugetlbfs",
	0x62656570:                "configfs",
	unix.PSTOREFS_MAGIC:       "pstore",
	0x65735543:                "fusectl",
	unix.BINFMTFS_MAGIC:       "binfmt_misc",
	unix.EFIVARFS_MAGIC:       "efivarfs",
	unix.SELINUX_MAGIC:        "selinuxfs",
	unix.SMACK_MAGIC:          "smackfs",
	unix.NSFS_MAGIC:           "nsfs",
	unix.PIPEFS_MAGIC:         "pipefs",
	unix.SOCKFS_MAGIC:         "sockfs",
	unix.ANON_INODE_FS_MAGIC:  "anon_inodefs",
	unix.AUTOFS_SUPER_MAGIC:   "autofs",
	unix.DEVMEM_MAGIC:         "devmem",
	unix.SECRETMEM_MAGIC:      "secretmem",
	unix.BDEVFS_MAGIC:         "bdev",
	unix.RDTGROUP_SUPER_MAGIC: "resctrl",
}

// specialFSTypes are the same file systems by the name /proc/self/mountinfo
// gives them, plus devtmpfs, which statfs reports as tmpfs.
var specialFSTypes = map[string]bool{
	"proc": true, "sysfs": true, "devpts": true, "cgroup": true, "cgroup2": true,
	"debugfs": true, "tracefs": true, "securityfs": true, "bpf": true, "mqueue": true,
	"hugetlbfs": true, "configfs": true, "pstore": true, "fusectl": true,
	"binfmt_misc": true, "efivarfs": true, "selinuxfs": true, "smackfs": true,
	"nsfs": true, "autofs": true, "resctrl": true, "devtmpfs": true, "rpc_pipefs": true,
	"nfsd": true,
}

// harmlessDevice reports whether the character device major:minor is one a
// guest may open: the memory devices that hold no state, /dev/null (1:3),
// /dev/zero (1:5), /dev/full (1:7), /dev/random (1:8) and /dev/urandom
// (1:9). /dev/mem (1:1), /dev/kmem (1:2), /dev/port (1:4) and /dev/kmsg
// (1:11) share the major number and are refused.
func harmlessDevice(major, minor uint32) bool {
	if major != 1 {
		return false
	}
	switch minor {
	case 3, 5, 7, 8, 9:
		return true
	}
	return false
}

// mount is one line of /proc/self/mountinfo.
type mount struct {
	id, parent uint64
	point      string
	fstype     string
}

// readMounts parses /proc/self/mountinfo.
func readMounts() ([]mount, error) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	var mounts []mount
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for sc.Scan() {
		// 36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw
		f := strings.Fields(sc.Text())
		sep := -1
		for i := 6; i < len(f); i++ {
			if f[i] == "-" {
				sep = i
				break
			}
		}
		if sep < 0 || sep+1 >= len(f) {
			continue
		}
		id, err1 := strconv.ParseUint(f[0], 10, 64)
		parent, err2 := strconv.ParseUint(f[1], 10, 64)
		if err1 != nil || err2 != nil {
			continue
		}
		mounts = append(mounts, mount{id: id, parent: parent, point: unescapeMountPath(f[4]), fstype: f[sep+1]})
	}
	return mounts, sc.Err()
}

// unescapeMountPath undoes mountinfo's octal escapes (\040 for a space).
func unescapeMountPath(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// forbiddenMounts returns the mounts a guest may not enter: those of a
// special file system and every mount below one (runc masks /proc/kcore
// with a bind of /dev/null and /proc/acpi with an empty tmpfs; lxcfs puts
// FUSE files over /proc/meminfo). tops are the highest of them, whose
// mount points appear in listings of directories the guest may read.
func forbiddenMounts(mounts []mount) (ids map[uint64]struct{}, tops []mount) {
	byID := make(map[uint64]mount, len(mounts))
	for _, m := range mounts {
		byID[m.id] = m
	}
	memo := map[uint64]bool{}
	var forbidden func(id uint64, depth int) bool
	forbidden = func(id uint64, depth int) bool {
		m, ok := byID[id]
		if !ok || depth > len(mounts) {
			return false
		}
		if v, ok := memo[id]; ok {
			return v
		}
		v := specialFSTypes[m.fstype] || (m.parent != id && forbidden(m.parent, depth+1))
		memo[id] = v
		return v
	}
	ids = map[uint64]struct{}{}
	for _, m := range mounts {
		if forbidden(m.id, 0) {
			ids[m.id] = struct{}{}
			if !forbidden(m.parent, 0) {
				tops = append(tops, m)
			}
		}
	}
	return ids, tops
}
