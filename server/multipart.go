package server

import (
	"errors"
	"io"
	"mime/multipart"
)

func newMultipart(r io.Reader, boundary string) (*multipart.Reader, error) {
	if boundary == "" {
		return nil, errors.New("no boundary in Content-Type")
	}
	return multipart.NewReader(r, boundary), nil
}

// findPart returns the part of the form field name.
func findPart(mr *multipart.Reader, name string) (io.Reader, error) {
	for {
		p, err := mr.NextPart()
		if err == io.EOF {
			return nil, errors.New("no form field '" + name + "'")
		}
		if err != nil {
			return nil, err
		}
		if p.FormName() == name {
			return p, nil
		}
	}
}
