package spki

import (
	"errors"
	"fmt"
	"time"
)

// Errors of reduction and chain search; each names one reason a chain does
// not grant what was asked.
var (
	// ErrNoPath means no sequence of certificates leads from the root to
	// the subject.
	ErrNoPath = errors.New("spki: no certificate path from root to subject")
	// ErrNotPropagated means a certificate without (propagate) was followed
	// by another one.
	ErrNotPropagated = errors.New("spki: delegation not propagated")
	// ErrTagNotCovered means the chain does not grant the requested tag.
	ErrTagNotCovered = errors.New("spki: tag not covered")
	// ErrChainTooLong means a path longer than the search bound.
	ErrChainTooLong = errors.New("spki: certificate chain too long")
)

// Tuple is an SPKI 5-tuple <issuer, subject, delegation, authorization,
// validity> (RFC 2693 §6).
type Tuple struct {
	Issuer    Principal
	Subject   Principal
	Propagate bool
	Tag       *Tag
	Validity  Validity
}

// Tuple returns the 5-tuple a certificate stands for.
func (c *Cert) Tuple() Tuple {
	return Tuple{Issuer: c.Issuer, Subject: c.Subject, Propagate: c.Propagate, Tag: c.Tag, Validity: c.Validity}
}

// Reduce combines <I1,S1,D1,A1,V1> and <I2,S2,D2,A2,V2> into
// <I1,S2,D2,AIntersect(A1,A2),VIntersect(V1,V2)> (RFC 2693 §6.3). It
// requires S1 = I2 and D1 true.
func Reduce(a, b Tuple) (Tuple, error) { return reduceWith(newTagOp(), a, b) }

// reduceWith is Reduce spending the tag algebra's work from o.
func reduceWith(o *tagOp, a, b Tuple) (Tuple, error) {
	if a.Subject.Hash != b.Issuer.Hash {
		return Tuple{}, fmt.Errorf("%w: subject %s is not issuer %s", ErrNoPath, a.Subject.Hash, b.Issuer.Hash)
	}
	if !a.Propagate {
		return Tuple{}, ErrNotPropagated
	}
	tag, ok := o.intersect(a.Tag, b.Tag)
	if o.exhausted() {
		return Tuple{}, fmt.Errorf("%w: %w", ErrTagNotCovered, ErrTagTooComplex)
	}
	if !ok {
		return Tuple{}, fmt.Errorf("%w: the tags of the two certificates do not intersect", ErrTagNotCovered)
	}
	return Tuple{Issuer: a.Issuer, Subject: b.Subject, Propagate: b.Propagate, Tag: tag, Validity: a.Validity.Intersect(b.Validity)}, nil
}

// ChainError says why no chain grants a request: Err is one of ErrNoPath,
// ErrNotPropagated, ErrTagNotCovered, ErrExpired, ErrNotYetValid,
// ErrBadSignature, ErrWrongSigner, ErrHashMismatch or ErrChainTooLong, and
// Cert is the hash of the certificate at fault (zero for ErrNoPath).
type ChainError struct {
	Err   error
	Cert  [32]byte
	Index int // position of the certificate in the failing path, from the root
	Msg   string
}

func (e *ChainError) Error() string {
	if e.Cert == ([32]byte{}) {
		return fmt.Sprintf("%v: %s", e.Err, e.Msg)
	}
	return fmt.Sprintf("%v: certificate %d (%x…): %s", e.Err, e.Index, e.Cert[:6], e.Msg)
}

func (e *ChainError) Unwrap() error { return e.Err }

// ChainRequest asks whether Subject holds Tag under Root's authority at
// Time.
type ChainRequest struct {
	Root      KeyHash
	Subject   KeyHash
	Tag       *Tag
	Time      time.Time
	MaxLength int // longest chain considered; 0 means 8
	// Covers, when set, replaces the test Implies(Tag, granted): it returns
	// nil when the reduced tag grants what the caller needs, or an error
	// saying why not (wrapped as ErrTagNotCovered). Applications whose
	// grants carry optional limits (a spending cap, say) use it to read
	// them from the reduced tag.
	Covers func(granted *Tag) error
	// Cache, when set, remembers verified signatures across searches.
	Cache VerifyCache
}

// Chain is a verified certificate chain and its reduced 5-tuple.
type Chain struct {
	Certs  []*SignedCert
	Result Tuple
}

// FindChain searches certs for a chain from req.Root to req.Subject that
// grants req.Tag at req.Time, verifying every signature it relies on. When
// Root is Subject the empty chain grants everything. When no chain works
// the error is a [*ChainError] for the path that came closest: one that
// reaches the subject beats one that does not; the reason is the first
// fault on that path.
func FindChain(certs []*SignedCert, req ChainRequest) (*Chain, error) {
	if req.Root == req.Subject {
		return &Chain{Result: Tuple{Issuer: HashPrincipal(req.Root), Subject: HashPrincipal(req.Subject), Propagate: true, Tag: AllTag()}}, nil
	}
	if req.Tag == nil && req.Covers == nil {
		return nil, fmt.Errorf("%w: no tag requested", ErrBadTag)
	}
	max := req.MaxLength
	if max <= 0 {
		max = 8
	}
	chain, _, err := findChain(certs, req, max)
	return chain, err
}

// searchWork bounds the tag algebra of one whole chain search (every path
// it tries shares it), and searchPaths the complete paths it reduces, so
// that hostile certificates (many orderings, large tags) cost about as
// much as a few honest reductions.
const (
	searchWork  = 2 * tagWorkBound
	searchPaths = 32
)

func findChain(certs []*SignedCert, req ChainRequest, max int) (*Chain, *search, error) {
	s := &search{certs: certs, req: req, max: max, sigs: make([]error, len(certs)), checked: make([]bool, len(certs)), used: make([]bool, len(certs)),
		op: &tagOp{steps: searchWork}, visited: map[KeyHash]bool{req.Root: true}}
	if chain := s.walk(req.Root, nil, nil); chain != nil {
		return chain, s, nil
	}
	if s.best == nil {
		return nil, s, &ChainError{Err: ErrNoPath, Msg: fmt.Sprintf("from %s to %s", req.Root, req.Subject)}
	}
	return nil, s, s.best
}

type search struct {
	certs   []*SignedCert
	req     ChainRequest
	max     int
	sigs    []error
	checked []bool
	used    []bool
	best    *ChainError
	bestRk  int
	op      *tagOp           // the work budget of the whole search
	paths   int              // complete paths reduced so far
	visited map[KeyHash]bool // principals on the current path: a path never revisits one
}

func (s *search) sigErr(i int) error {
	if !s.checked[i] {
		s.checked[i], s.sigs[i] = true, s.certs[i].VerifyCached(s.req.Cache)
	}
	return s.sigs[i]
}

// walk extends path (indices into certs) from principal at. fault is the
// first problem on the path so far.
func (s *search) walk(at KeyHash, path []int, fault *ChainError) *Chain {
	for i, sc := range s.certs {
		if s.used[i] || sc.Cert.Issuer.Hash != at || s.visited[sc.Cert.Subject.Hash] {
			continue // a loop back to a principal on the path never helps
		}
		if s.op.exhausted() || s.paths >= searchPaths {
			s.record(&ChainError{Err: ErrTagNotCovered, Msg: "the certificates offer too many paths, or too complex tags, to search"}, -1)
			return nil
		}
		f := fault
		idx := len(path)
		if f == nil {
			if err := s.sigErr(i); err != nil {
				f = &ChainError{Err: unwrapSentinel(err), Cert: sc.Cert.Hash(), Index: idx, Msg: err.Error()}
			}
		}
		if f == nil && idx > 0 && !s.certs[path[idx-1]].Cert.Propagate {
			prev := s.certs[path[idx-1]].Cert
			f = &ChainError{Err: ErrNotPropagated, Cert: prev.Hash(), Index: idx - 1, Msg: "certificate has no (propagate) but is followed by another"}
		}
		if f == nil && idx+1 > s.max {
			f = &ChainError{Err: ErrChainTooLong, Cert: sc.Cert.Hash(), Index: idx, Msg: fmt.Sprintf("longer than %d certificates", s.max)}
		}
		np := append(path[:idx:idx], i)
		if sc.Cert.Subject.Hash == s.req.Subject {
			if f == nil {
				s.paths++
				chain, err := s.reduce(np)
				if err == nil {
					return chain
				}
				f = err
			}
			s.record(f, 1000+idx)
			continue
		}
		if idx+1 >= s.max+1 {
			continue
		}
		s.used[i], s.visited[sc.Cert.Subject.Hash] = true, true
		chain := s.walk(sc.Cert.Subject.Hash, np, f)
		s.used[i], s.visited[sc.Cert.Subject.Hash] = false, false
		if chain != nil {
			return chain
		}
		if f != nil {
			s.record(f, idx)
		}
	}
	return nil
}

func (s *search) record(f *ChainError, rank int) {
	if s.best == nil || rank > s.bestRk {
		s.best, s.bestRk = f, rank
	}
}

// reduce folds a path whose signatures and propagation were checked.
func (s *search) reduce(path []int) (*Chain, *ChainError) {
	chain := &Chain{}
	var t Tuple
	for k, i := range path {
		c := s.certs[i].Cert
		chain.Certs = append(chain.Certs, s.certs[i])
		if err := c.Validity.Check(s.req.Time); err != nil {
			return nil, &ChainError{Err: unwrapSentinel(err), Cert: c.Hash(), Index: k, Msg: err.Error()}
		}
		if k == 0 {
			t = c.Tuple()
			continue
		}
		var err error
		if t, err = reduceWith(s.op, t, c.Tuple()); err != nil {
			return nil, &ChainError{Err: unwrapSentinel(err), Cert: c.Hash(), Index: k, Msg: err.Error()}
		}
	}
	last := s.certs[path[len(path)-1]].Cert
	if s.req.Covers != nil {
		if err := s.req.Covers(t.Tag); err != nil {
			return nil, &ChainError{Err: ErrTagNotCovered, Cert: last.Hash(), Index: len(path) - 1, Msg: err.Error()}
		}
	} else if !Implies(s.req.Tag, t.Tag) {
		return nil, &ChainError{Err: ErrTagNotCovered, Cert: last.Hash(), Index: len(path) - 1,
			Msg: fmt.Sprintf("requested %s, chain grants %s", s.req.Tag, t.Tag)}
	}
	chain.Result = t
	return chain, nil
}

// unwrapSentinel finds the package sentinel inside a wrapped error.
func unwrapSentinel(err error) error {
	for _, s := range []error{ErrBadSignature, ErrWrongSigner, ErrHashMismatch, ErrMalformedSignature, ErrUnsupportedKey,
		ErrExpired, ErrNotYetValid, ErrNotPropagated, ErrTagNotCovered, ErrNoPath} {
		if errors.Is(err, s) {
			return s
		}
	}
	return err
}
