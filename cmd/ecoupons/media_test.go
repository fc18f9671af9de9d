package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestDemoStreamIsRealMedia: the demo's segments are MPEG-TS a player
// takes — 188-byte packets with their sync byte, a PAT naming a PMT that
// lists an H.264 and an AAC stream — and the playlist names them; with
// ffprobe installed, each segment also decodes as 2 s of H.264 video.
func TestDemoStreamIsRealMedia(t *testing.T) {
	site := demoSite()
	playlist := site["stream/playlist.m3u8"]
	for i := range 4 {
		name := "seg" + string(rune('0'+i)) + ".ts"
		if !strings.Contains(playlist, "\n"+name+"\n") {
			t.Fatalf("the playlist does not name %s", name)
		}
		ts := []byte(site["stream/"+name])
		types, err := tsStreamTypes(ts)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !types[0x1b] || !types[0x0f] {
			t.Fatalf("%s: stream types %v, want H.264 (0x1b) and AAC (0x0f)", name, types)
		}
		ffprobe, err := exec.LookPath("ffprobe")
		if err != nil && os.Getenv("CI") == "true" {
			t.Fatal("ffprobe is not installed (apt-get install -y ffmpeg) — CI=true, so the segments must be decoded")
		}
		if err == nil {
			path := filepath.Join(t.TempDir(), name)
			os.WriteFile(path, ts, 0o644)
			out, err := exec.Command(ffprobe, "-v", "error", "-select_streams", "v:0", "-show_entries", "stream=codec_name,duration", "-of", "csv=p=0", path).Output()
			if err != nil || !strings.HasPrefix(string(out), "h264,2.0") {
				t.Fatalf("ffprobe %s: %q %v", name, out, err)
			}
		}
	}
}

// tsStreamTypes checks the transport stream's packets and returns the
// stream types its PMT lists.
func tsStreamTypes(ts []byte) (map[byte]bool, error) {
	if len(ts) == 0 || len(ts)%188 != 0 {
		return nil, errorf("%d bytes: not a whole number of 188-byte packets", len(ts))
	}
	pmtPID := -1
	types := map[byte]bool{}
	for off := 0; off < len(ts); off += 188 {
		p := ts[off : off+188]
		if p[0] != 0x47 {
			return nil, errorf("packet at %d: no sync byte", off)
		}
		pid := int(p[1]&0x1f)<<8 | int(p[2])
		start := p[1]&0x40 != 0
		payload := p[4:]
		switch (p[3] >> 4) & 3 {
		case 2: // adaptation field only
			continue
		case 3:
			payload = payload[1+int(payload[0]):]
		}
		if !start || (pid != 0 && pid != pmtPID) {
			continue
		}
		sec := payload[1+int(payload[0]):] // past the pointer field
		if len(sec) < 12 {
			return nil, errorf("short section")
		}
		secLen := int(sec[1]&0x0f)<<8 | int(sec[2])
		body := sec[8 : 3+secLen-4] // past the header, before the CRC
		if pid == 0 {
			if len(body) >= 4 {
				pmtPID = int(body[2]&0x1f)<<8 | int(body[3])
			}
			continue
		}
		info := int(body[2]&0x0f)<<8 | int(body[3])
		for es := body[4+info:]; len(es) >= 5; {
			types[es[0]] = true
			n := int(es[3]&0x0f)<<8 | int(es[4])
			es = es[5+n:]
		}
	}
	if pmtPID < 0 {
		return nil, errorf("no PAT")
	}
	return types, nil
}

func errorf(format string, args ...any) error { return fmt.Errorf("mpeg-ts: "+format, args...) }
