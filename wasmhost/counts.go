package wasmhost

import (
	"errors"
	"fmt"
)

// errCount is wrapped by the errors of checkCounts.
var errCount = errors.New("a vector declares more entries than it has bytes")

// vectorSections are the ids of the sections whose contents are a vector.
var vectorSections = [...]bool{1: true, 2: true, 3: true, 4: true, 5: true, 6: true, 7: true, 9: true, 10: true, 11: true}

// checkCounts requires every vector in a section to declare no more entries
// than it has bytes left, each entry taking one byte at least: the
// section's own vector, the segments of the element and data sections and
// the maps of the custom "name" section.
//
// wazero's decoder allocates the entries a vector declares before it reads
// them: a few bytes claiming 2^32 entries would have the process that
// compiles the module allocate up to hundreds of gigabytes and die of it.
// preflight runs before anything hands a module to wazero, so a module
// with such a count is refused (ErrInvalid) and never decoded.
//
// # Notes
//
// A segment or subsection this cannot decode (a constant expression with
// an instruction it does not know, a truncated entry) ends the check of
// its section: wazero refuses what is malformed, and what it accepts but
// this does not know is rare enough to be left to it.
func checkCounts(id byte, body reader) error {
	if int(id) >= len(vectorSections) || !vectorSections[id] {
		if id == 0 {
			return checkNameSection(body)
		}
		return nil
	}
	n, err := body.count()
	if err != nil || id != 9 && id != 11 {
		return err
	}
	for i := uint32(0); i < n; i++ {
		var ok bool
		if id == 9 {
			ok, err = body.elementSegment()
		} else {
			ok, err = body.dataSegment()
		}
		if err != nil {
			return fmt.Errorf("segment %d: %w", i, err)
		}
		if !ok {
			return nil
		}
	}
	return nil
}

// count decodes a vector's length and requires it to be at most the bytes
// left. An integer that does not decode is left to the caller's parser or
// to wazero (errCount is the only error).
func (r *reader) count() (uint32, error) {
	n, err := r.u32()
	if err != nil {
		return 0, nil
	}
	if remain := len(r.b) - r.off; uint64(n) > uint64(remain) {
		return 0, fmt.Errorf("%w: %d entries in %d bytes", errCount, n, remain)
	}
	return n, nil
}

// countOK is count for a caller that stops at anything it cannot decode:
// ok is false when the length did not decode.
func (r *reader) countOK() (n uint32, ok bool, err error) {
	start := r.off
	if n, err = r.count(); err != nil {
		return 0, false, err
	}
	return n, r.off > start, nil
}

// elementSegment checks the vectors of one element segment; ok is false if
// it could not decode the segment.
func (r *reader) elementSegment() (ok bool, err error) {
	flag, err := r.u32()
	if err != nil || flag > 7 {
		return false, nil
	}
	if flag&3 == 2 { // table index
		if _, err = r.u32(); err != nil {
			return false, nil
		}
	}
	if flag&1 == 0 && !r.constExpr() { // active: the offset
		return false, nil
	}
	if flag&3 != 0 { // element kind or reference type
		if _, err = r.byte(); err != nil {
			return false, nil
		}
	}
	n, ok, err := r.countOK()
	if !ok {
		return false, err
	}
	for i := uint32(0); i < n; i++ {
		if flag&4 == 0 {
			_, err = r.u32() // function index
			ok = err == nil
		} else {
			ok = r.constExpr()
		}
		if !ok {
			return false, nil
		}
	}
	return true, nil
}

// dataSegment checks the length of one data segment's bytes; ok is false
// if it could not decode the segment.
func (r *reader) dataSegment() (ok bool, err error) {
	flag, err := r.u32()
	if err != nil || flag > 2 {
		return false, nil
	}
	if flag == 2 { // memory index
		if _, err = r.u32(); err != nil {
			return false, nil
		}
	}
	if flag != 1 && !r.constExpr() { // active: the offset
		return false, nil
	}
	n, ok, err := r.countOK()
	if !ok {
		return false, err
	}
	_, err = r.bytes(n)
	return err == nil, nil
}

// constExpr skips a constant expression and its end; false if it meets an
// instruction that is not constant or a malformed immediate.
func (r *reader) constExpr() bool {
	for {
		op, err := r.byte()
		if err != nil {
			return false
		}
		switch op {
		case 0x0b: // end
			return true
		case 0x41, 0x42: // i32.const, i64.const
			err = r.sleb()
		case 0x43:
			_, err = r.bytes(4)
		case 0x44:
			_, err = r.bytes(8)
		case 0x23, 0xd2: // global.get, ref.func
			_, err = r.u32()
		case 0xd0: // ref.null
			_, err = r.byte()
		case 0x6a, 0x6b, 0x6c, 0x7c, 0x7d, 0x7e: // extended constant arithmetic
		case 0xfd: // v128.const
			var sub uint32
			if sub, err = r.u32(); err == nil && sub != 12 {
				return false
			}
			if err == nil {
				_, err = r.bytes(16)
			}
		default:
			return false
		}
		if err != nil {
			return false
		}
	}
}

// checkNameSection checks the maps of a custom section named "name": the
// function names (subsection 1) and the local names (subsection 2).
func checkNameSection(r reader) error {
	if name, ok, err := r.checkedName(); !ok || name != "name" {
		return err
	}
	for r.off < len(r.b) {
		id, err := r.byte()
		if err != nil {
			return nil
		}
		size, err := r.u32()
		if err != nil {
			return nil
		}
		sub, err := r.bytes(size)
		if err != nil {
			return nil
		}
		s := &reader{b: sub}
		switch id {
		case 1:
			_, err = s.nameMap()
		case 2:
			var n uint32
			var ok bool
			if n, ok, err = s.countOK(); !ok {
				break
			}
			for i := uint32(0); i < n && ok && err == nil; i++ {
				if _, err = s.u32(); err != nil { // function index
					return nil
				}
				ok, err = s.nameMap()
			}
		}
		if err != nil {
			return fmt.Errorf("name subsection %d: %w", id, err)
		}
	}
	return nil
}

// nameMap checks a name map's length and skips its entries; ok is false if
// it could not decode it.
func (r *reader) nameMap() (ok bool, err error) {
	n, ok, err := r.countOK()
	if !ok {
		return false, err
	}
	for i := uint32(0); i < n; i++ {
		if _, err = r.u32(); err != nil { // index
			return false, nil
		}
		if _, ok, err = r.checkedName(); !ok {
			return false, err
		}
	}
	return true, nil
}

// checkedName decodes a name, its length checked as count does; ok is
// false if it could not decode it.
func (r *reader) checkedName() (name string, ok bool, err error) {
	n, ok, err := r.countOK()
	if !ok {
		return "", false, err
	}
	b, err := r.bytes(n)
	return string(b), err == nil, nil
}
