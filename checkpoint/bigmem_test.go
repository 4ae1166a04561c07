package checkpoint

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/osediff-go/osediff/tensor"
)

// sd21UNetShapes lists the parameters of the diffusers UNet2DConditionModel
// of Stable Diffusion 2.1-base (865,910,724 values), derived from its config.
func sd21UNetShapes() map[string][]int {
	const temb, ctx = 1280, 1024
	ch := []int{320, 640, 1280, 1280}
	s := map[string][]int{}
	lin := func(p string, out, in int, bias bool) {
		s[p+".weight"] = []int{out, in}
		if bias {
			s[p+".bias"] = []int{out}
		}
	}
	conv := func(p string, out, in, k int) {
		s[p+".weight"] = []int{out, in, k, k}
		s[p+".bias"] = []int{out}
	}
	norm := func(p string, c int) { s[p+".weight"], s[p+".bias"] = []int{c}, []int{c} }
	resnet := func(p string, in, out int) {
		norm(p+".norm1", in)
		conv(p+".conv1", out, in, 3)
		lin(p+".time_emb_proj", out, temb, true)
		norm(p+".norm2", out)
		conv(p+".conv2", out, out, 3)
		if in != out {
			conv(p+".conv_shortcut", out, in, 1)
		}
	}
	attn := func(p string, c int) {
		norm(p+".norm", c)
		lin(p+".proj_in", c, c, true)
		b := p + ".transformer_blocks.0"
		for i, kv := range []int{c, ctx} {
			a := fmt.Sprintf("%s.attn%d", b, i+1)
			lin(a+".to_q", c, c, false)
			lin(a+".to_k", c, kv, false)
			lin(a+".to_v", c, kv, false)
			lin(a+".to_out.0", c, c, true)
		}
		norm(b+".norm1", c)
		norm(b+".norm2", c)
		norm(b+".norm3", c)
		lin(b+".ff.net.0.proj", 8*c, c, true)
		lin(b+".ff.net.2", c, 4*c, true)
		lin(p+".proj_out", c, c, true)
	}
	conv("conv_in", ch[0], 4, 3)
	lin("time_embedding.linear_1", temb, ch[0], true)
	lin("time_embedding.linear_2", temb, temb, true)
	in := ch[0]
	for i, c := range ch {
		for j := 0; j < 2; j++ {
			resnet(fmt.Sprintf("down_blocks.%d.resnets.%d", i, j), in, c)
			if i < 3 {
				attn(fmt.Sprintf("down_blocks.%d.attentions.%d", i, j), c)
			}
			in = c
		}
		if i < 3 {
			conv(fmt.Sprintf("down_blocks.%d.downsamplers.0.conv", i), c, c, 3)
		}
	}
	resnet("mid_block.resnets.0", 1280, 1280)
	attn("mid_block.attentions.0", 1280)
	resnet("mid_block.resnets.1", 1280, 1280)
	rev := []int{1280, 1280, 640, 320}
	prev := 1280
	for i, out := range rev {
		input := rev[min(i+1, 3)]
		for j := 0; j < 3; j++ {
			skip := out
			if j == 2 {
				skip = input
			}
			rin := out
			if j == 0 {
				rin = prev
			}
			resnet(fmt.Sprintf("up_blocks.%d.resnets.%d", i, j), rin+skip, out)
			if i > 0 {
				attn(fmt.Sprintf("up_blocks.%d.attentions.%d", i, j), out)
			}
		}
		if i < 3 {
			conv(fmt.Sprintf("up_blocks.%d.upsamplers.0.conv", i), out, out, 3)
		}
		prev = out
	}
	norm("conv_norm_out", ch[0])
	conv("conv_out", 4, ch[0], 3)
	return s
}

// writeRandomFP16 streams a safetensors file of random F16 values.
func writeRandomFP16(path string, shapes map[string][]int) (numel int64, err error) {
	names := make([]string, 0, len(shapes))
	for k := range shapes {
		names = append(names, k)
	}
	sort.Strings(names)
	hdr := map[string]any{"__metadata__": map[string]string{"format": "pt"}}
	var off int64
	for _, k := range names {
		n := int64(1)
		for _, d := range shapes[k] {
			n *= int64(d)
		}
		hdr[k] = map[string]any{"dtype": "F16", "shape": shapes[k], "data_offsets": []int64{off, off + 2*n}}
		off += 2 * n
		numel += n
	}
	hb, err := json.Marshal(hdr)
	if err != nil {
		return 0, err
	}
	f, err := os.Create(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	w := bufio.NewWriterSize(f, 4<<20)
	binary.Write(w, binary.LittleEndian, uint64(len(hb)))
	w.Write(hb)
	x := uint64(0x9e3779b97f4a7c15)
	var buf [2]byte
	for i := int64(0); i < numel; i++ {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		// Sign, exponent 2^-7..2^-1, random mantissa.
		h := uint16(x&0x83ff) | uint16(8+(x>>16)%7)<<10
		binary.LittleEndian.PutUint16(buf[:], h)
		w.Write(buf[:])
	}
	if err := w.Flush(); err != nil {
		return 0, err
	}
	return numel, f.Close()
}

// shapedModel builds a struct type with one tagged *tensor.Tensor field per
// key, each holding a tensor.Shaped placeholder.
func shapedModel(shapes map[string][]int) any {
	names := make([]string, 0, len(shapes))
	for k := range shapes {
		names = append(names, k)
	}
	sort.Strings(names)
	fields := make([]reflect.StructField, len(names))
	for i, k := range names {
		fields[i] = reflect.StructField{Name: "F" + strconv.Itoa(i), Type: tensorType, Tag: reflect.StructTag(`weights:"` + k + `"`)}
	}
	v := reflect.New(reflect.StructOf(fields))
	for i, k := range names {
		v.Elem().Field(i).Set(reflect.ValueOf(tensor.Shaped(shapes[k]...)))
	}
	return v.Interface()
}

func peakRSSKiB() (int64, error) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(l, "VmHWM:"); ok {
			return strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
		}
	}
	return 0, fmt.Errorf("no VmHWM in /proc/self/status")
}

const bindMemEnv = "CHECKPOINT_BIND_MEM_FILE"

// TestBindMemoryChild is the measured process of TestBindMemorySD21UNet.
func TestBindMemoryChild(t *testing.T) {
	path := os.Getenv(bindMemEnv)
	if path == "" {
		t.Skip("run by TestBindMemorySD21UNet")
	}
	model := shapedModel(sd21UNetShapes())
	start := time.Now()
	st, err := OpenSafetensors(path)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := Bind(model, st, BindOptions{})
	if err != nil {
		t.Fatal(err)
	}
	st.Close()
	el := time.Since(start)
	hwm, err := peakRSSKiB()
	if err != nil {
		t.Fatal(err)
	}
	fmt.Printf("BINDMEM elements=%d hwm_kib=%d seconds=%.3f\n", rep.Elements, hwm, el.Seconds())
}

// bindSD21 writes an SD 2.1-base-sized fp16 UNet in the diffusers layout and
// binds it in a fresh process, returning the f32 bytes, the peak RSS and the
// bind time.
func bindSD21(t testing.TB) (f32Bytes, peak int64, seconds float64) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "unet"), 0o755); err != nil {
		t.Fatal(err)
	}
	shapes := sd21UNetShapes()
	numel, err := writeRandomFP16(filepath.Join(dir, "unet", "diffusion_pytorch_model.fp16.safetensors"), shapes)
	if err != nil {
		t.Fatal(err)
	}
	if numel != 865910724 {
		t.Fatalf("generated UNet has %d parameters, SD 2.1-base has 865910724", numel)
	}
	path, err := ComponentWeights(dir, "unet", true)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestBindMemoryChild$", "-test.v")
	cmd.Env = append(os.Environ(), bindMemEnv+"="+path)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	var el, hwm int64
	for _, l := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(l, "BINDMEM ") {
			if _, err := fmt.Sscanf(l, "BINDMEM elements=%d hwm_kib=%d seconds=%g", &el, &hwm, &seconds); err != nil {
				t.Fatal(err)
			}
		}
	}
	if el != numel {
		t.Fatalf("child bound %d values, want %d\n%s", el, numel, out)
	}
	return 4 * numel, hwm * 1024, seconds
}

// TestBindMemorySD21UNet binds an SD 2.1-base-sized fp16 UNet (1.7 GB on
// disk) and checks that the peak RSS stays within 1.2x the float32 size of
// the weights: no double copies, mapped file pages released as they are
// converted.
func TestBindMemorySD21UNet(t *testing.T) {
	if testing.Short() {
		t.Skip("writes a 1.7 GB file and allocates 3.5 GB")
	}
	f32, peak, sec := bindSD21(t)
	ratio := float64(peak) / float64(f32)
	t.Logf("bound %.2f GB of float32 in %.2fs; peak RSS %.2f GB = %.3fx", float64(f32)/1e9, sec, float64(peak)/1e9, ratio)
	if ratio > 1.2 {
		t.Fatalf("peak RSS %.3fx the float32 size, want <= 1.2x", ratio)
	}
}

// BenchmarkBindSD21UNetFP16 reports the bind time and peak RSS ratio.
func BenchmarkBindSD21UNetFP16(b *testing.B) {
	for i := 0; i < b.N; i++ {
		f32, peak, sec := bindSD21(b)
		b.ReportMetric(float64(peak)/float64(f32), "peakRSS/f32")
		b.ReportMetric(sec, "bind-s")
		b.ReportMetric(float64(f32)/2/1e9/sec, "fp16-GB/s")
	}
}
