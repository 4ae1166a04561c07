package osediff

import (
	"context"
	"errors"
	"math"
	"reflect"
	"testing"

	"github.com/osediff-go/osediff/tensor"
)

// refTileBoxes transcribes the loops of OSEDiff_test.forward literally
// (grid_rows counts along x, grid_cols along y; stale offsets are kept when
// the if does not fire, exactly as in Python).
func refTileBoxes(h, w, tileSize, overlap int) []TileBox {
	tile := min(tileSize, min(h, w))
	gridRows, curX := 0, 0
	for curX < w {
		curX = max(gridRows*tile-overlap*gridRows, 0) + tile
		gridRows++
	}
	gridCols, curY := 0, 0
	for curY < h {
		curY = max(gridCols*tile-overlap*gridCols, 0) + tile
		gridCols++
	}
	var boxes []TileBox
	ofsX, ofsY := 0, 0
	for row := 0; row < gridRows; row++ {
		for col := 0; col < gridCols; col++ {
			if col < gridCols-1 || row < gridRows-1 {
				ofsX = max(row*tile-overlap*row, 0)
				ofsY = max(col*tile-overlap*col, 0)
			}
			if row == gridRows-1 {
				ofsX = w - tile
			}
			if col == gridCols-1 {
				ofsY = h - tile
			}
			boxes = append(boxes, TileBox{X: ofsX, Y: ofsY, W: tile, H: tile})
		}
	}
	return boxes
}

func TestLatentTileBoxes(t *testing.T) {
	cases := []struct {
		name                string
		h, w, tile, overlap int
		want                []TileBox // nil: compare with refTileBoxes only
	}{
		// The ground truth's tiled case: latent 8x32, tile 8, overlap 4.
		{"case_tiled", 8, 32, 8, 4, []TileBox{
			{0, 0, 8, 8}, {4, 0, 8, 8}, {8, 0, 8, 8}, {12, 0, 8, 8}, {16, 0, 8, 8}, {20, 0, 8, 8}, {24, 0, 8, 8}}},
		// 2x2 grid, x outer: (0,0) (0,4) (4,0) (4,4).
		{"2x2", 12, 12, 8, 4, []TileBox{{0, 0, 8, 8}, {0, 4, 8, 8}, {4, 0, 8, 8}, {4, 4, 8, 8}}},
		{"defaults_128", 128, 128, 96, 32, nil},
		{"defaults_wide", 100, 300, 96, 32, nil},
		{"defaults_tall", 257, 97, 96, 32, nil},
		{"shrunk_tile", 40, 250, 96, 32, nil}, // tile 40, overlap 32
		{"exact_fit", 160, 160, 96, 32, nil},
		{"no_overlap", 30, 50, 10, 0, nil},
		{"one_tile", 96, 96, 96, 32, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := LatentTileBoxes(c.h, c.w, c.tile, c.overlap)
			ref := refTileBoxes(c.h, c.w, c.tile, c.overlap)
			if !reflect.DeepEqual(got, ref) {
				t.Fatalf("boxes\n got %v\nwant %v (reference loops)", got, ref)
			}
			if c.want != nil && !reflect.DeepEqual(got, c.want) {
				t.Fatalf("boxes\n got %v\nwant %v", got, c.want)
			}
			// Every latent pixel is covered.
			cover := make([]int, c.h*c.w)
			for _, b := range got {
				if b.X < 0 || b.Y < 0 || b.X+b.W > c.w || b.Y+b.H > c.h {
					t.Fatalf("box %v outside %dx%d", b, c.h, c.w)
				}
				for y := b.Y; y < b.Y+b.H; y++ {
					for x := b.X; x < b.X+b.W; x++ {
						cover[y*c.w+x]++
					}
				}
			}
			for i, n := range cover {
				if n == 0 {
					t.Fatalf("pixel x=%d y=%d not covered", i%c.w, i/c.w)
				}
			}
		})
	}
}

// An overlap not below the shrunken tile would loop forever in the
// reference; here it is halved and the grid still covers the latent.
func TestLatentTilingThinLatent(t *testing.T) {
	lt, err := NewLatentTiling(20, 500, 96, 32)
	if err != nil {
		t.Fatal(err)
	}
	if lt.Tile != 20 || lt.Overlap != 10 {
		t.Fatalf("tile %d overlap %d, want 20, 10", lt.Tile, lt.Overlap)
	}
	if want := refTileBoxes(20, 500, 20, 10); !reflect.DeepEqual(lt.Boxes, want) {
		t.Fatalf("boxes %v, want %v", lt.Boxes, want)
	}
	for _, bad := range [][4]int{{0, 5, 8, 4}, {5, 5, 0, 0}, {5, 5, 8, -1}} {
		if _, err := NewLatentTiling(bad[0], bad[1], bad[2], bad[3]); err == nil {
			t.Errorf("NewLatentTiling%v: no error", bad)
		}
	}
}

func TestGaussianTileWeights(t *testing.T) {
	for _, n := range []int{1, 8, 96} {
		w := GaussianTileWeights(n)
		norm := 1 / math.Sqrt(2*math.Pi*0.01)
		for y := 0; y < n; y++ {
			for x := 0; x < n; x++ {
				gx := math.Exp(-math.Pow(float64(x)-float64(n-1)/2, 2)/float64(n*n)/0.02) * norm
				gy := math.Exp(-math.Pow(float64(y)-float64(n)/2, 2)/float64(n*n)/0.02) * norm
				if d := math.Abs(w[y*n+x] - gx*gy); d > 1e-12*gx*gy {
					t.Fatalf("t=%d w[%d][%d] = %v, want %v", n, y, x, w[y*n+x], gx*gy)
				}
			}
		}
		if n > 1 {
			// x is centred at (t-1)/2 (symmetric), y at t/2 (not).
			if w[0] != w[n-1] {
				t.Errorf("t=%d: x weights not symmetric", n)
			}
			if w[0] == w[(n-1)*n] {
				t.Errorf("t=%d: y weights symmetric, want the reference's t/2 centre", n)
			}
		}
	}
}

// ramp fills [n,c,h,w] with distinct values.
func ramp(n, c, h, w int) *tensor.Tensor {
	x := tensor.New(n, c, h, w)
	for i := range x.Data() {
		x.Data()[i] = float32(math.Sin(float64(i)*0.37)) * 3
	}
	return x
}

func TestTiledUNetIdentity(t *testing.T) {
	latent := ramp(1, 4, 24, 40)
	calls := 0
	var progress [][2]int
	got, err := TiledUNet(context.Background(), latent, 16, 6,
		func(done, total int) { progress = append(progress, [2]int{done, total}) },
		func(tile *tensor.Tensor) *tensor.Tensor { calls++; return tile.Clone() })
	if err != nil {
		t.Fatal(err)
	}
	nb := len(LatentTileBoxes(24, 40, 16, 6))
	if calls != nb || len(progress) != nb || progress[nb-1] != [2]int{nb, nb} {
		t.Fatalf("%d calls, progress %v, want %d tiles", calls, progress, nb)
	}
	d, at := maxAbsDiff(got.Data(), latent.Data())
	if d > 1e-6 {
		t.Fatalf("identity blend differs by %g at %d", d, at)
	}
}

// A tile-position-dependent callback checks the blend against an
// independent float64 evaluation of sum(w*out)/sum(w).
func TestTiledUNetBlend(t *testing.T) {
	const n, c, h, w, tileSize, overlap = 1, 2, 20, 28, 12, 5
	latent := ramp(n, c, h, w)
	k := 0
	fn := func(tile *tensor.Tensor) *tensor.Tensor {
		out := tile.Clone()
		for i := range out.Data() {
			out.Data()[i] = out.Data()[i]*float32(k+1) + float32(i%7)
		}
		k++
		return out
	}
	got, err := TiledUNet(context.Background(), latent, tileSize, overlap, nil, fn)
	if err != nil {
		t.Fatal(err)
	}
	lt, _ := NewLatentTiling(h, w, tileSize, overlap)
	T := lt.Tile
	num := make([]float64, c*h*w)
	den := make([]float64, h*w)
	for ti, b := range lt.Boxes {
		for ch := 0; ch < c; ch++ {
			for y := 0; y < T; y++ {
				for x := 0; x < T; x++ {
					i := (ch*T+y)*T + x
					v := float64(latent.At(0, ch, b.Y+y, b.X+x)*float32(ti+1) + float32(i%7))
					num[(ch*h+b.Y+y)*w+b.X+x] += lt.Weights[y*T+x] * v
					if ch == 0 {
						den[(b.Y+y)*w+b.X+x] += lt.Weights[y*T+x]
					}
				}
			}
		}
	}
	for i, g := range got.Data() {
		want := num[i] / den[i%(h*w)]
		if math.Abs(float64(g)-want) > 1e-5*math.Max(1, math.Abs(want)) {
			t.Fatalf("out[%d] = %v, want %v", i, g, want)
		}
	}
}

func TestTiledUNetErrors(t *testing.T) {
	latent := ramp(1, 4, 16, 32)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := TiledUNet(ctx, latent, 8, 4, nil, func(x *tensor.Tensor) *tensor.Tensor { return x }); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: err %v", err)
	}
	bad := func(x *tensor.Tensor) *tensor.Tensor { return tensor.New(1, 4, 3, 3) }
	if _, err := TiledUNet(context.Background(), latent, 8, 4, nil, bad); err == nil {
		t.Error("wrong tile output shape: no error")
	}
	if _, err := TiledUNet(context.Background(), tensor.New(4, 16, 32), 8, 4, nil, bad); err == nil {
		t.Error("3-d latent: no error")
	}
}
