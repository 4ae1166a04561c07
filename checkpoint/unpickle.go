package checkpoint

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"unicode/utf8"
)

// ErrForbidden is wrapped by the error for a pickle that asks for anything
// outside the allow-list (a global such as os.system, or an opcode that
// instantiates arbitrary classes).
var ErrForbidden = errors.New("forbidden by the restricted unpickler")

// Values built while unpickling. Containers are pointers so that memo
// references see later APPENDs and SETITEMs.
type (
	pyList  struct{ items []any }
	pyTuple []any
	pySet   struct{ items []any }
	pyDict  struct {
		keys, vals []any
		idx        map[any]int
	}
	pyGlobal    struct{ module, name string }
	storageType struct{ dtype DType }
	pyMark      struct{}
)

func newDict() *pyDict { return &pyDict{idx: map[any]int{}} }

func (d *pyDict) set(k, v any) error {
	switch k.(type) {
	case string, int64, float64, bool, nil:
	default:
		return fmt.Errorf("%w: dict key of type %s", ErrMalformed, pyTypeName(k))
	}
	if i, ok := d.idx[k]; ok {
		d.vals[i] = v
		return nil
	}
	d.idx[k] = len(d.keys)
	d.keys = append(d.keys, k)
	d.vals = append(d.vals, v)
	return nil
}

// storageNames maps the pickled storage classes to their element types.
var storageNames = map[string]DType{
	"FloatStorage": F32, "DoubleStorage": F64, "HalfStorage": F16, "BFloat16Storage": BF16,
	"LongStorage": I64, "IntStorage": I32, "ShortStorage": I16, "CharStorage": I8,
	"ByteStorage": U8, "BoolStorage": Bool,
}

// allowedGlobal resolves the only globals the unpickler knows; everything
// else is refused.
func allowedGlobal(module, name string) (any, error) {
	switch module + "." + name {
	case "collections.OrderedDict",
		"torch._utils._rebuild_tensor_v2", "torch._utils._rebuild_tensor",
		"torch._utils._rebuild_parameter", "torch._utils._rebuild_parameter_with_state",
		"builtins.set", "builtins.frozenset", "__builtin__.set", "__builtin__.frozenset",
		"_codecs.encode", "torch.Size":
		return pyGlobal{module, name}, nil
	}
	if module == "torch" {
		if dt, ok := storageNames[name]; ok {
			return storageType{dt}, nil
		}
	}
	return nil, fmt.Errorf("%w: global %s.%s", ErrForbidden, module, name)
}

// unpickler limits.
const (
	maxPickleDepth = 1000 // nesting depth of the converted result
)

type unpickler struct {
	data    []byte
	pos     int
	stack   []any
	marks   []int
	memo    map[uint64]any
	persist func(pid any) (any, error)
	reduce  func(fn pyGlobal, args pyTuple) (any, error)
}

func (u *unpickler) errf(format string, a ...any) error {
	return fmt.Errorf("%w: pickle at byte %d: %s", ErrMalformed, u.pos, fmt.Sprintf(format, a...))
}

func (u *unpickler) take(n int) ([]byte, error) {
	if n < 0 || n > len(u.data)-u.pos {
		return nil, u.errf("%d bytes wanted, %d left", n, len(u.data)-u.pos)
	}
	b := u.data[u.pos : u.pos+n]
	u.pos += n
	return b, nil
}

func (u *unpickler) line() (string, error) {
	i := bytes.IndexByte(u.data[u.pos:min(len(u.data), u.pos+1<<16)], '\n')
	if i < 0 {
		return "", u.errf("unterminated line")
	}
	s := string(u.data[u.pos : u.pos+i])
	u.pos += i + 1
	return s, nil
}

func (u *unpickler) push(v any) { u.stack = append(u.stack, v) }

func (u *unpickler) pop() (any, error) {
	if len(u.stack) == 0 || (len(u.marks) > 0 && len(u.stack) <= u.marks[len(u.marks)-1]) {
		return nil, u.errf("stack underflow")
	}
	v := u.stack[len(u.stack)-1]
	u.stack = u.stack[:len(u.stack)-1]
	return v, nil
}

func (u *unpickler) top() (any, error) {
	if len(u.stack) == 0 || (len(u.marks) > 0 && len(u.stack) <= u.marks[len(u.marks)-1]) {
		return nil, u.errf("stack underflow")
	}
	return u.stack[len(u.stack)-1], nil
}

// popMark pops the items pushed since the last MARK.
func (u *unpickler) popMark() ([]any, error) {
	if len(u.marks) == 0 {
		return nil, u.errf("no MARK")
	}
	m := u.marks[len(u.marks)-1]
	u.marks = u.marks[:len(u.marks)-1]
	items := append([]any(nil), u.stack[m:]...)
	u.stack = u.stack[:m]
	return items, nil
}

func (u *unpickler) memoGet(k uint64) error {
	v, ok := u.memo[k]
	if !ok {
		return u.errf("memo key %d not found", k)
	}
	u.push(v)
	return nil
}

func (u *unpickler) memoPut(k uint64) error {
	v, err := u.top()
	if err != nil {
		return err
	}
	u.memo[k] = v
	return nil
}

// unpickle runs the restricted virtual machine over data. persist resolves
// persistent ids; reduce applies an allowed callable (nil: containers only).
func unpickle(data []byte, persist func(any) (any, error), reduce func(pyGlobal, pyTuple) (any, error)) (any, error) {
	u := &unpickler{data: data, memo: map[uint64]any{}, persist: persist, reduce: reduce}
	for {
		if u.pos >= len(u.data) {
			return nil, u.errf("no STOP opcode")
		}
		op := u.data[u.pos]
		u.pos++
		if op == '.' { // STOP
			v, err := u.pop()
			if err != nil {
				return nil, err
			}
			return v, nil
		}
		if err := u.step(op); err != nil {
			return nil, err
		}
	}
}

func (u *unpickler) step(op byte) error {
	switch op {
	case 0x80: // PROTO
		b, err := u.take(1)
		if err != nil {
			return err
		}
		if b[0] > 5 {
			return u.errf("unsupported pickle protocol %d", b[0])
		}
	case 0x95: // FRAME
		_, err := u.take(8)
		return err
	case '(': // MARK
		u.marks = append(u.marks, len(u.stack))
	case '0': // POP
		if len(u.marks) > 0 && len(u.stack) == u.marks[len(u.marks)-1] {
			u.marks = u.marks[:len(u.marks)-1] // POP of a MARK
			return nil
		}
		_, err := u.pop()
		return err
	case '1': // POP_MARK
		_, err := u.popMark()
		return err
	case '2': // DUP
		v, err := u.top()
		if err != nil {
			return err
		}
		u.push(v)
	case 'N':
		u.push(nil)
	case 0x88:
		u.push(true)
	case 0x89:
		u.push(false)
	case '}':
		u.push(newDict())
	case ']':
		u.push(&pyList{})
	case ')':
		u.push(pyTuple{})
	case 0x8f: // EMPTY_SET
		u.push(&pySet{})
	case 'K': // BININT1
		b, err := u.take(1)
		if err != nil {
			return err
		}
		u.push(int64(b[0]))
	case 'M': // BININT2
		b, err := u.take(2)
		if err != nil {
			return err
		}
		u.push(int64(binary.LittleEndian.Uint16(b)))
	case 'J': // BININT
		b, err := u.take(4)
		if err != nil {
			return err
		}
		u.push(int64(int32(binary.LittleEndian.Uint32(b))))
	case 0x8a, 0x8b: // LONG1, LONG4
		var n int
		if op == 0x8a {
			b, err := u.take(1)
			if err != nil {
				return err
			}
			n = int(b[0])
		} else {
			b, err := u.take(4)
			if err != nil {
				return err
			}
			n = int(int32(binary.LittleEndian.Uint32(b)))
		}
		b, err := u.take(n)
		if err != nil {
			return err
		}
		v, err := u.decodeLong(b)
		if err != nil {
			return err
		}
		u.push(v)
	case 'I', 'L': // INT, LONG (text)
		s, err := u.line()
		if err != nil {
			return err
		}
		switch s {
		case "00":
			u.push(false)
			return nil
		case "01":
			u.push(true)
			return nil
		}
		v, err := strconv.ParseInt(strings.TrimSuffix(s, "L"), 10, 64)
		if err != nil {
			return u.errf("integer %q", s)
		}
		u.push(v)
	case 'G': // BINFLOAT
		b, err := u.take(8)
		if err != nil {
			return err
		}
		u.push(math.Float64frombits(binary.BigEndian.Uint64(b)))
	case 'F': // FLOAT
		s, err := u.line()
		if err != nil {
			return err
		}
		v, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return u.errf("float %q", s)
		}
		u.push(v)
	case 'X', 0x8c, 0x8d, 'T', 'U', 'B', 'C', 0x8e, 0x96: // strings and bytes
		var n uint64
		switch op {
		case 0x8c, 'U', 'C':
			b, err := u.take(1)
			if err != nil {
				return err
			}
			n = uint64(b[0])
		case 'X', 'T', 'B':
			b, err := u.take(4)
			if err != nil {
				return err
			}
			n = uint64(binary.LittleEndian.Uint32(b))
		default:
			b, err := u.take(8)
			if err != nil {
				return err
			}
			n = binary.LittleEndian.Uint64(b)
		}
		if n > uint64(len(u.data)-u.pos) {
			return u.errf("string of %d bytes, %d left", n, len(u.data)-u.pos)
		}
		b, _ := u.take(int(n))
		switch op {
		case 'X', 0x8c, 0x8d:
			if !utf8.Valid(b) {
				return u.errf("invalid UTF-8 string")
			}
			u.push(string(b))
		case 'T', 'U': // py2 str: latin-1 text
			u.push(latin1(b))
		default:
			u.push(append([]byte(nil), b...))
		}
	case 'V': // UNICODE (raw-unicode-escape line)
		s, err := u.line()
		if err != nil {
			return err
		}
		u.push(s)
	case 'S': // STRING (quoted repr line)
		s, err := u.line()
		if err != nil {
			return err
		}
		if len(s) < 2 || (s[0] != '\'' && s[0] != '"') || s[len(s)-1] != s[0] {
			return u.errf("STRING %q", s)
		}
		u.push(s[1 : len(s)-1])
	case 'q', 'r', 'p', 0x94: // BINPUT, LONG_BINPUT, PUT, MEMOIZE
		var k uint64
		switch op {
		case 'q':
			b, err := u.take(1)
			if err != nil {
				return err
			}
			k = uint64(b[0])
		case 'r':
			b, err := u.take(4)
			if err != nil {
				return err
			}
			k = uint64(binary.LittleEndian.Uint32(b))
		case 'p':
			s, err := u.line()
			if err != nil {
				return err
			}
			v, err := strconv.ParseUint(s, 10, 32)
			if err != nil {
				return u.errf("PUT %q", s)
			}
			k = v
		default:
			k = uint64(len(u.memo))
		}
		return u.memoPut(k)
	case 'h', 'j', 'g': // BINGET, LONG_BINGET, GET
		switch op {
		case 'h':
			b, err := u.take(1)
			if err != nil {
				return err
			}
			return u.memoGet(uint64(b[0]))
		case 'j':
			b, err := u.take(4)
			if err != nil {
				return err
			}
			return u.memoGet(uint64(binary.LittleEndian.Uint32(b)))
		default:
			s, err := u.line()
			if err != nil {
				return err
			}
			v, err := strconv.ParseUint(s, 10, 32)
			if err != nil {
				return u.errf("GET %q", s)
			}
			return u.memoGet(v)
		}
	case 't': // TUPLE
		items, err := u.popMark()
		if err != nil {
			return err
		}
		u.push(pyTuple(items))
	case 0x85, 0x86, 0x87: // TUPLE1..3
		n := int(op - 0x84)
		t := make(pyTuple, n)
		for i := n - 1; i >= 0; i-- {
			v, err := u.pop()
			if err != nil {
				return err
			}
			t[i] = v
		}
		u.push(t)
	case 'l': // LIST
		items, err := u.popMark()
		if err != nil {
			return err
		}
		u.push(&pyList{items: items})
	case 'd': // DICT
		items, err := u.popMark()
		if err != nil {
			return err
		}
		d := newDict()
		if err := u.setItems(d, items); err != nil {
			return err
		}
		u.push(d)
	case 0x91: // FROZENSET
		items, err := u.popMark()
		if err != nil {
			return err
		}
		u.push(&pySet{items: items})
	case 'a': // APPEND
		v, err := u.pop()
		if err != nil {
			return err
		}
		return u.appendTo([]any{v})
	case 'e', 0x90: // APPENDS, ADDITEMS
		items, err := u.popMark()
		if err != nil {
			return err
		}
		return u.appendTo(items)
	case 's': // SETITEM
		v, err := u.pop()
		if err != nil {
			return err
		}
		k, err := u.pop()
		if err != nil {
			return err
		}
		t, err := u.top()
		if err != nil {
			return err
		}
		d, ok := t.(*pyDict)
		if !ok {
			return u.errf("SETITEM on %s", pyTypeName(t))
		}
		return u.wrap(d.set(k, v))
	case 'u': // SETITEMS
		items, err := u.popMark()
		if err != nil {
			return err
		}
		t, err := u.top()
		if err != nil {
			return err
		}
		d, ok := t.(*pyDict)
		if !ok {
			return u.errf("SETITEMS on %s", pyTypeName(t))
		}
		return u.setItems(d, items)
	case 'c': // GLOBAL
		mod, err := u.line()
		if err != nil {
			return err
		}
		name, err := u.line()
		if err != nil {
			return err
		}
		g, err := allowedGlobal(mod, name)
		if err != nil {
			return err
		}
		u.push(g)
	case 0x93: // STACK_GLOBAL
		name, err := u.pop()
		if err != nil {
			return err
		}
		mod, err := u.pop()
		if err != nil {
			return err
		}
		ms, ok1 := mod.(string)
		ns, ok2 := name.(string)
		if !ok1 || !ok2 {
			return u.errf("STACK_GLOBAL of non-strings")
		}
		g, err := allowedGlobal(ms, ns)
		if err != nil {
			return err
		}
		u.push(g)
	case 'R', 0x81: // REDUCE, NEWOBJ
		args, err := u.pop()
		if err != nil {
			return err
		}
		fn, err := u.pop()
		if err != nil {
			return err
		}
		at, ok := args.(pyTuple)
		if !ok {
			return u.errf("call with %s arguments", pyTypeName(args))
		}
		g, ok := fn.(pyGlobal)
		if !ok {
			return u.errf("call of %s", pyTypeName(fn))
		}
		v, err := u.call(g, at)
		if err != nil {
			return err
		}
		u.push(v)
	case 'b': // BUILD
		state, err := u.pop()
		if err != nil {
			return err
		}
		obj, err := u.top()
		if err != nil {
			return err
		}
		// Only the attribute state torch attaches to a state_dict
		// (OrderedDict._metadata) or a tensor is accepted, and dropped.
		switch obj.(type) {
		case *pyDict, *TorchTensor:
		default:
			return u.errf("BUILD on %s", pyTypeName(obj))
		}
		_ = state
	case 'Q': // BINPERSID
		pid, err := u.pop()
		if err != nil {
			return err
		}
		return u.persistent(pid)
	case 'P': // PERSID
		s, err := u.line()
		if err != nil {
			return err
		}
		return u.persistent(s)
	case 'i', 'o', 0x92, 0x82, 0x83, 0x84, 0x97, 0x98:
		return fmt.Errorf("%w: pickle opcode %q (INST/OBJ/NEWOBJ_EX/EXT/buffers) at byte %d", ErrForbidden, op, u.pos-1)
	default:
		return u.errf("unknown opcode 0x%02x", op)
	}
	return nil
}

func (u *unpickler) wrap(err error) error {
	if err != nil {
		return fmt.Errorf("pickle at byte %d: %w", u.pos, err)
	}
	return nil
}

func (u *unpickler) persistent(pid any) error {
	if u.persist == nil {
		return u.errf("persistent id without a loader")
	}
	v, err := u.persist(pid)
	if err != nil {
		return u.wrap(err)
	}
	u.push(v)
	return nil
}

func (u *unpickler) setItems(d *pyDict, items []any) error {
	if len(items)%2 != 0 {
		return u.errf("odd number of dict items")
	}
	for i := 0; i < len(items); i += 2 {
		if err := d.set(items[i], items[i+1]); err != nil {
			return u.wrap(err)
		}
	}
	return nil
}

func (u *unpickler) appendTo(items []any) error {
	t, err := u.top()
	if err != nil {
		return err
	}
	switch c := t.(type) {
	case *pyList:
		c.items = append(c.items, items...)
	case *pySet:
		c.items = append(c.items, items...)
	default:
		return u.errf("APPEND to %s", pyTypeName(t))
	}
	return nil
}

func (u *unpickler) decodeLong(b []byte) (int64, error) {
	if len(b) > 8 {
		return 0, u.errf("integer of %d bytes", len(b))
	}
	var v uint64
	for i := len(b) - 1; i >= 0; i-- {
		v = v<<8 | uint64(b[i])
	}
	if len(b) > 0 && len(b) < 8 && b[len(b)-1]&0x80 != 0 { // sign-extend
		v |= ^uint64(0) << (8 * len(b))
	}
	return int64(v), nil
}

// call applies an allowed global. Containers are handled here; torch
// rebuild functions go to u.reduce.
func (u *unpickler) call(g pyGlobal, args pyTuple) (any, error) {
	switch g.module + "." + g.name {
	case "collections.OrderedDict":
		d := newDict()
		if len(args) == 0 {
			return d, nil
		}
		if len(args) != 1 {
			return nil, u.errf("OrderedDict with %d arguments", len(args))
		}
		var pairs []any
		switch a := args[0].(type) {
		case *pyList:
			pairs = a.items
		case pyTuple:
			pairs = a
		default:
			return nil, u.errf("OrderedDict of %s", pyTypeName(args[0]))
		}
		for _, p := range pairs {
			kv, ok := p.(pyTuple)
			if !ok || len(kv) != 2 {
				return nil, u.errf("OrderedDict item %s", pyTypeName(p))
			}
			if err := d.set(kv[0], kv[1]); err != nil {
				return nil, u.wrap(err)
			}
		}
		return d, nil
	case "builtins.set", "builtins.frozenset", "__builtin__.set", "__builtin__.frozenset", "torch.Size":
		s := &pySet{}
		if len(args) == 0 {
			return s, nil
		}
		switch a := args[0].(type) {
		case *pyList:
			s.items = append(s.items, a.items...)
		case pyTuple:
			s.items = append(s.items, a...)
		default:
			return nil, u.errf("%s of %s", g.name, pyTypeName(args[0]))
		}
		if g.name == "Size" {
			return pyTuple(s.items), nil
		}
		return s, nil
	case "_codecs.encode":
		if len(args) != 2 {
			return nil, u.errf("_codecs.encode with %d arguments", len(args))
		}
		s, ok1 := args[0].(string)
		enc, ok2 := args[1].(string)
		if !ok1 || !ok2 || (enc != "latin1" && enc != "latin-1") {
			return nil, fmt.Errorf("%w: _codecs.encode(%s, %v)", ErrForbidden, pyTypeName(args[0]), args[1])
		}
		b := make([]byte, 0, len(s))
		for _, r := range s {
			if r > 255 {
				return nil, u.errf("_codecs.encode: rune %U outside latin-1", r)
			}
			b = append(b, byte(r))
		}
		return b, nil
	}
	if u.reduce == nil {
		return nil, fmt.Errorf("%w: call of %s.%s", ErrForbidden, g.module, g.name)
	}
	v, err := u.reduce(g, args)
	if err != nil {
		return nil, u.wrap(err)
	}
	return v, nil
}

func latin1(b []byte) string {
	r := make([]rune, len(b))
	for i, c := range b {
		r[i] = rune(c)
	}
	return string(r)
}

func pyTypeName(v any) string {
	switch v := v.(type) {
	case nil:
		return "None"
	case *pyList:
		return "list"
	case pyTuple:
		return "tuple"
	case *pyDict:
		return "dict"
	case *pySet:
		return "set"
	case pyGlobal:
		return v.module + "." + v.name
	case storageType:
		return "storage type " + string(v.dtype)
	case *TorchTensor:
		return "tensor"
	case string:
		return "str"
	case []byte:
		return "bytes"
	case int64:
		return "int"
	case float64:
		return "float"
	case bool:
		return "bool"
	}
	return fmt.Sprintf("%T", v)
}

// plain converts unpickled values into map[string]any, []any and scalars.
// Shared containers convert once; cycles and excessive nesting are errors.
type plainer struct {
	done    map[any]any
	onStack map[any]bool
}

func toPlain(v any) (any, error) {
	p := &plainer{done: map[any]any{}, onStack: map[any]bool{}}
	return p.conv(v, 0)
}

func (p *plainer) conv(v any, depth int) (any, error) {
	if depth > maxPickleDepth {
		return nil, fmt.Errorf("%w: pickle nested deeper than %d", ErrMalformed, maxPickleDepth)
	}
	var ref any // identity of a mutable container
	switch c := v.(type) {
	case *pyList, *pyDict, *pySet:
		ref = c
	case pyTuple:
		if len(c) > 0 {
			ref = &c[0]
		}
	}
	if ref != nil {
		if d, ok := p.done[ref]; ok {
			return d, nil
		}
		if p.onStack[ref] {
			return nil, fmt.Errorf("%w: self-referential pickle", ErrMalformed)
		}
		p.onStack[ref] = true
		defer delete(p.onStack, ref)
	}
	var out any
	switch c := v.(type) {
	case *pyList:
		l, err := p.list(c.items, depth)
		if err != nil {
			return nil, err
		}
		out = l
	case *pySet:
		l, err := p.list(c.items, depth)
		if err != nil {
			return nil, err
		}
		out = l
	case pyTuple:
		l, err := p.list(c, depth)
		if err != nil {
			return nil, err
		}
		out = l
	case *pyDict:
		m := make(map[string]any, len(c.keys))
		for i, k := range c.keys {
			var ks string
			switch k := k.(type) {
			case string:
				ks = k
			case int64:
				ks = strconv.FormatInt(k, 10)
			case float64:
				ks = strconv.FormatFloat(k, 'g', -1, 64)
			case bool:
				ks = strconv.FormatBool(k)
			case nil:
				ks = "None"
			}
			cv, err := p.conv(c.vals[i], depth+1)
			if err != nil {
				return nil, err
			}
			m[ks] = cv
		}
		out = m
	case pyGlobal, storageType:
		return nil, fmt.Errorf("%w: uncalled %s in the result", ErrMalformed, pyTypeName(v))
	default:
		out = v
	}
	if ref != nil {
		p.done[ref] = out
	}
	return out, nil
}

func (p *plainer) list(items []any, depth int) ([]any, error) {
	out := make([]any, len(items))
	for i, it := range items {
		c, err := p.conv(it, depth+1)
		if err != nil {
			return nil, err
		}
		out[i] = c
	}
	return out, nil
}
