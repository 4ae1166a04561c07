package checkpoint

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"sort"
)

// File is an open checkpoint file seen as one Source.
type File interface {
	Source
	Close() error
}

// Open opens a safetensors file or a torch.save zip archive (whose root dict
// is flattened, see TorchFile.Source), telling them apart by content.
func Open(path string) (File, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("checkpoint: %w", err)
	}
	head := make([]byte, 4)
	n, _ := io.ReadFull(f, head)
	f.Close()
	if n == 4 && bytes.Equal(head, []byte("PK\x03\x04")) || n >= 1 && head[0] == 0x80 {
		tf, err := OpenTorch(path)
		if err != nil {
			return nil, err
		}
		src, err := tf.Source()
		if err != nil {
			tf.Close()
			return nil, err
		}
		return torchFileSource{src.(*TorchSource)}, nil
	}
	return OpenSafetensors(path)
}

type torchFileSource struct{ *TorchSource }

func (t torchFileSource) Close() error { return t.file.Close() }

// Inspect lists the tensors of any supported file, sorted by name.
func Inspect(path string) ([]Info, error) {
	f, err := Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	keys := f.Keys()
	sort.Strings(keys)
	infos := make([]Info, 0, len(keys))
	for _, k := range keys {
		info, _ := f.Info(k)
		infos = append(infos, info)
	}
	return infos, nil
}
