package dataread

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"reflect"
	"strings"
	"testing"
)

// message returns a dot-stuffed DATA stream of about size bytes: header
// fields, then 76-byte lines of which every tenth starts with a dot.
func message(size int) []byte {
	var b bytes.Buffer
	b.WriteString("From: a@client.example\r\nTo: b@test.example\r\nSubject: benchmark\r\n\r\n")
	for i := 0; b.Len() < size; i++ {
		if i%10 == 0 {
			b.WriteString("..")
		}
		b.WriteString(strings.Repeat(string(rune('a'+i%26)), 74))
		b.WriteString("\r\n")
	}
	b.WriteString(".\r\n")
	return b.Bytes()
}

// BenchmarkReader compares Reader with go-smtp's dataReader (the type that
// a real server passes to Session.Data, made anew for each run), both
// reading from a bufio.Reader of go-smtp's size (4096) into io.Discard.
func BenchmarkReader(b *testing.B) {
	goSMTP := goSMTPDataReader(b)
	for _, size := range []int{4 << 10, 100 << 10, 1 << 20} {
		msg := message(size)
		src := bytes.NewReader(msg)
		br := bufio.NewReaderSize(src, 4096)
		reset := func() {
			src.Reset(msg)
			br.Reset(src)
		}
		b.Run(fmt.Sprintf("dataread/%dKiB", size>>10), func(b *testing.B) {
			b.SetBytes(int64(len(msg)))
			for b.Loop() {
				reset()
				if _, err := io.Copy(io.Discard, NewReader(br, Options{MaxSize: 2 << 20, MaxLineLength: 1000})); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(fmt.Sprintf("go-smtp/%dKiB", size>>10), func(b *testing.B) {
			b.SetBytes(int64(len(msg)))
			for b.Loop() {
				reset()
				v := reflect.New(goSMTP.Elem())
				bp, _ := fields(v)
				*bp = br
				if _, err := io.Copy(io.Discard, v.Interface().(io.Reader)); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
