package tesla

import (
	"encoding/binary"
	"fmt"
)

// Packet wire format, version 1, all integers big-endian:
//
//	offset  size  field
//	     0     1  version (PacketVersion = 0x01)
//	     1     8  interval i (uint64)
//	     9    16  MAC = HMAC-SHA256(F'(K_i), message)[:16]
//	    25     8  disclosed key index j (uint64)
//	    33    32  disclosed key K_j
//	    65     4  message length L (uint32, at most MaxMessageSize)
//	    69     L  message
//
// The encoding of a packet is unique: a parser accepts exactly the bytes
// MarshalBinary produces.
const (
	// PacketVersion is the version byte of the encoding.
	PacketVersion = 0x01
	// HeaderSize is the size of an encoded packet without its message.
	HeaderSize = 69
	// MaxMessageSize bounds the message of a packet (64 KiB).
	MaxMessageSize = 64 << 10

	offInterval  = 1
	offMAC       = 9
	offDisclosed = 25
	offKey       = 33
	offLength    = 65
)

// Packet is one TESLA packet (RFC 4082 §3.4): a message authenticated for
// interval Interval and the key of an earlier interval.
type Packet struct {
	// Interval is the sender's interval i when it sent the packet, ≥ 1.
	Interval uint64
	// MAC is HMAC-SHA256(F'(K_i), Message)[:16].
	MAC [MACSize]byte
	// DisclosedIndex is the index j of DisclosedKey: Interval - Delay, or
	// 0 while Interval ≤ Delay (then DisclosedKey is the commitment K_0).
	DisclosedIndex uint64
	// DisclosedKey is K_j. Disclosed keys are public.
	DisclosedKey Key
	// Message is the authenticated payload, at most MaxMessageSize bytes.
	Message []byte
}

// AppendBinary appends the packet's encoding to b (encoding.BinaryAppender).
func (p *Packet) AppendBinary(b []byte) ([]byte, error) {
	if len(p.Message) > MaxMessageSize {
		return b, fmt.Errorf("tesla: message of %d bytes, limit %d: %w", len(p.Message), MaxMessageSize, ErrMessageTooLarge)
	}
	b = append(b, PacketVersion)
	b = binary.BigEndian.AppendUint64(b, p.Interval)
	b = append(b, p.MAC[:]...)
	b = binary.BigEndian.AppendUint64(b, p.DisclosedIndex)
	b = append(b, p.DisclosedKey[:]...)
	b = binary.BigEndian.AppendUint32(b, uint32(len(p.Message)))
	return append(b, p.Message...), nil
}

// MarshalBinary returns the packet's encoding (encoding.BinaryMarshaler).
func (p *Packet) MarshalBinary() ([]byte, error) {
	return p.AppendBinary(make([]byte, 0, HeaderSize+len(p.Message)))
}

// UnmarshalBinary parses exactly one encoded packet
// (encoding.BinaryUnmarshaler). Errors are *ParseError values matching
// ErrMalformed and one of ErrTruncated, ErrBadVersion, ErrMessageTooLarge
// or ErrTrailingData. The message is copied; data is not retained. On
// error p is left unchanged.
func (p *Packet) UnmarshalBinary(data []byte) error {
	if len(data) < 1 {
		return &ParseError{Offset: len(data), Err: ErrTruncated}
	}
	if data[0] != PacketVersion {
		return &ParseError{Offset: 0, Err: ErrBadVersion}
	}
	if len(data) < HeaderSize {
		return &ParseError{Offset: len(data), Err: ErrTruncated}
	}
	n := binary.BigEndian.Uint32(data[offLength:])
	if n > MaxMessageSize {
		return &ParseError{Offset: offLength, Err: ErrMessageTooLarge}
	}
	end := HeaderSize + int(n)
	if len(data) < end {
		return &ParseError{Offset: len(data), Err: ErrTruncated}
	}
	if len(data) > end {
		return &ParseError{Offset: end, Err: ErrTrailingData}
	}
	var q Packet
	q.Interval = binary.BigEndian.Uint64(data[offInterval:])
	copy(q.MAC[:], data[offMAC:offDisclosed])
	q.DisclosedIndex = binary.BigEndian.Uint64(data[offDisclosed:])
	copy(q.DisclosedKey[:], data[offKey:offLength])
	q.Message = append([]byte{}, data[HeaderSize:end]...)
	*p = q
	return nil
}
