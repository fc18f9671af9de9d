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
	// ErrSearchBudget means the chain search ran out of its work budget
	// (see [FindChain] and [SearchBudget]) before it had tried every path:
	// a chain may exist, but it was not found.
	ErrSearchBudget = errors.New("spki: certificate chain search exceeded its work budget")
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
// ErrBadSignature, ErrWrongSigner, ErrHashMismatch, ErrChainTooLong or
// ErrSearchBudget, and Cert is the hash of the certificate at fault (zero
// for ErrNoPath and ErrSearchBudget).
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
// grants req.Tag at req.Time, verifying every signature it relies on (and
// at most once each, those of the certificates leading to the subject).
// When Root is Subject the empty chain grants everything.
//
// The search is depth-first, in the order of certs, and never revisits a
// principal on a path (a path with a loop grants no more than the same
// path with the loop cut out). It first looks among the
// certificates that can be links of a valid chain: signature good, valid
// at req.Time, (propagate) unless the certificate names the subject, and
// its subject can lead on to req.Subject within the length left without
// passing through the root. Only the paths through them are reduced,
// tag-checked and offered to Covers.
//
// The search has a work budget of [SearchBudget](len(certs)) steps: one
// step for every certificate examined as a candidate link (in the search
// and in the backward passes that find which certificates lead to the
// subject), for every signature verified, and for every pair of tuples
// reduced. Besides, all its tag algebra shares one budget of 40,000
// intersection steps and it reduces at most 32 complete paths. A valid
// chain reached within these bounds is returned; when any of them runs
// out first the search stops and returns a [*ChainError] whose Err is
// [ErrSearchBudget]: a chain may exist, but FindChain refuses to look for
// it any longer.
//
// When the search ends without a chain, the error is a [*ChainError] for
// the path that came closest: one that reaches the subject beats one that
// stops at a faulty link, and a longer path beats a shorter one. The
// reason is the first fault on that path (any bad signature, missing
// propagation or excess length first, then validity and tags, in chain
// order). Finding that path walks the remaining certificates and is cut
// off by the same step budget, in which case the closest path found so
// far, or ErrNoPath, is reported.
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

// SearchBudget is the number of steps [FindChain] may spend on n
// certificates: 1024 + 4n². That lets an honest search try every
// certificate as a link from every principal a few times over, while 100
// hostile certificates cost at most about 41,000 cheap steps (among them
// at most 100 signature checks; tag algebra has its own fixed budget)
// instead of the 9! paths through 10 keys that they can connect fully.
func SearchBudget(n int) int { return searchStepsBase + searchStepsPerCert2*n*n }

// searchWork bounds the tag algebra of one whole chain search (every path
// it tries shares it), and searchPaths the complete paths it reduces, so
// that hostile certificates (many orderings, large tags) cost about as
// much as a few honest reductions. searchStepsBase and searchStepsPerCert2
// make SearchBudget.
const (
	searchWork          = 2 * tagWorkBound
	searchPaths         = 32
	searchStepsBase     = 1024
	searchStepsPerCert2 = 4
)

// Ranks of a failed path, best last: a fault on a link toward the subject,
// a path reaching the subject. Within a tier a longer path ranks higher.
const (
	rankToward = 1 << 24
	rankReach  = 2 << 24
)

func findChain(certs []*SignedCert, req ChainRequest, max int) (*Chain, *search, error) {
	s := &search{certs: certs, req: req, max: max, sigs: make([]error, len(certs)), checked: make([]bool, len(certs)),
		op: &tagOp{steps: searchWork}, budget: SearchBudget(len(certs)), visited: map[KeyHash]bool{req.Root: true}}
	s.next, s.dist = s.links(true)
	if chain := s.find(req.Root, nil); chain != nil {
		return chain, s, nil
	}
	if s.out {
		msg := fmt.Sprintf("gave up after %d steps (budget %d for %d certificates), %d paths reduced", s.steps, s.budget, len(certs), s.paths)
		if s.best != nil {
			msg += "; closest so far: " + s.best.Error()
		}
		return nil, s, &ChainError{Err: ErrSearchBudget, Msg: msg}
	}
	// No valid chain exists: walk every certificate that leads toward the
	// subject to say why.
	s.next, _ = s.links(false)
	s.diagnose(req.Root, nil, nil, nil)
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
	best    *ChainError
	bestRk  int
	op      *tagOp           // the tag-algebra budget of the whole search
	paths   int              // complete paths reduced so far
	steps   int              // steps spent so far (see SearchBudget)
	budget  int              // SearchBudget(len(certs))
	out     bool             // a budget ran out: the search gave up
	visited map[KeyHash]bool // principals on the current path: a path never revisits one

	next map[KeyHash][]int // the certificates worth trying from a principal, in order
	dist map[KeyHash]int   // fewest certificates from a principal to the subject
}

// spend counts n steps and reports whether the budget still holds.
func (s *search) spend(n int) bool {
	s.steps += n
	if s.steps > s.budget {
		s.out = true
	}
	return !s.out
}

func (s *search) sigErr(i int) error {
	if !s.checked[i] {
		s.spend(1)
		s.checked[i], s.sigs[i] = true, s.certs[i].VerifyCached(s.req.Cache)
	}
	return s.sigs[i]
}

// usable reports whether certificate i can be a link of a valid chain.
func (s *search) usable(i int) bool {
	c := s.certs[i].Cert
	return (c.Propagate || c.Subject.Hash == s.req.Subject) && c.Validity.Check(s.req.Time) == nil && s.sigErr(i) == nil
}

// links finds, going backward from the subject, the principals that lead
// to it without passing through the root, with their distance, and the
// certificates between them (only usable ones when onlyUsable), grouped
// by issuer in the order of certs. Each certificate is examined once.
func (s *search) links(onlyUsable bool) (map[KeyHash][]int, map[KeyHash]int) {
	bySubject := map[KeyHash][]int{}
	for i, sc := range s.certs {
		if sc.Cert.Issuer.Hash != sc.Cert.Subject.Hash { // a self-delegation never helps
			bySubject[sc.Cert.Subject.Hash] = append(bySubject[sc.Cert.Subject.Hash], i)
		}
	}
	dist := map[KeyHash]int{s.req.Subject: 0}
	keep := make([]bool, len(s.certs))
	queue := []KeyHash{s.req.Subject}
	for len(queue) > 0 {
		h := queue[0]
		queue = queue[1:]
		for _, i := range bySubject[h] {
			s.spend(1)
			if onlyUsable && !s.usable(i) {
				continue
			}
			keep[i] = true
			from := s.certs[i].Cert.Issuer.Hash
			if _, seen := dist[from]; !seen {
				dist[from] = dist[h] + 1
				if from != s.req.Root { // a path never comes back to the root
					queue = append(queue, from)
				}
			}
		}
	}
	next := map[KeyHash][]int{}
	for i, k := range keep {
		if k {
			from := s.certs[i].Cert.Issuer.Hash
			next[from] = append(next[from], i)
		}
	}
	return next, dist
}

// find extends path (indices into certs) from principal at with usable
// certificates, reducing each path that reaches the subject.
func (s *search) find(at KeyHash, path []int) *Chain {
	idx := len(path)
	for _, i := range s.next[at] {
		if !s.spend(1) {
			return nil
		}
		c := s.certs[i].Cert
		to := c.Subject.Hash
		if s.visited[to] {
			continue // a loop back to a principal on the path never helps
		}
		if d := idx + 1 + s.dist[to]; d > s.max {
			if s.better(rankToward + idx) {
				s.record(rankToward+idx, &ChainError{Err: ErrChainTooLong, Cert: c.Hash(), Index: idx,
					Msg: fmt.Sprintf("the subject is %d certificates away, longer than %d", d, s.max)})
			}
			continue
		}
		np := append(path[:idx:idx], i)
		if to == s.req.Subject {
			if s.paths >= searchPaths || s.op.exhausted() {
				s.out = true
				return nil
			}
			s.paths++
			chain, f := s.reduce(np)
			if chain != nil || s.out {
				return chain
			}
			s.record(rankReach+idx, f)
			continue
		}
		s.visited[to] = true
		chain := s.find(to, np)
		s.visited[to] = false
		if chain != nil || s.out {
			return chain
		}
	}
	return nil
}

// diagnose walks every path toward the subject after find found no chain,
// recording the first fault of each: fault is the first bad signature,
// missing propagation or excess length on the path so far, late the first
// certificate not valid at the time. A path without either was reduced by
// find already.
func (s *search) diagnose(at KeyHash, path []int, fault, late *ChainError) {
	idx := len(path)
	for _, i := range s.next[at] {
		if !s.spend(1) {
			return
		}
		sc := s.certs[i]
		to := sc.Cert.Subject.Hash
		if s.visited[to] {
			continue
		}
		f, l := fault, late
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
		if l == nil {
			if err := sc.Cert.Validity.Check(s.req.Time); err != nil {
				l = &ChainError{Err: unwrapSentinel(err), Cert: sc.Cert.Hash(), Index: idx, Msg: err.Error()}
			}
		}
		report := f
		if report == nil {
			report = l
		}
		if to == s.req.Subject {
			if report != nil {
				s.record(rankReach+idx, report)
			}
			continue
		}
		if idx+1 > s.max {
			continue
		}
		s.visited[to] = true
		s.diagnose(to, append(path[:idx:idx], i), f, l)
		s.visited[to] = false
		if s.out {
			return
		}
		if report != nil {
			s.record(rankToward+idx, report)
		}
	}
}

func (s *search) better(rank int) bool { return s.best == nil || rank > s.bestRk }

func (s *search) record(rank int, f *ChainError) {
	if s.better(rank) {
		s.best, s.bestRk = f, rank
	}
}

// reduce folds a path of usable certificates, one step per pair of
// tuples. It returns neither a chain nor a fault when a budget runs out.
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
		if !s.spend(1) {
			return nil, nil
		}
		var err error
		if t, err = reduceWith(s.op, t, c.Tuple()); err != nil {
			if s.op.exhausted() {
				s.out = true
				return nil, nil
			}
			return nil, &ChainError{Err: unwrapSentinel(err), Cert: c.Hash(), Index: k, Msg: err.Error()}
		}
	}
	last := s.certs[path[len(path)-1]].Cert
	if s.req.Covers != nil {
		if err := s.req.Covers(t.Tag); err != nil {
			return nil, &ChainError{Err: ErrTagNotCovered, Cert: last.Hash(), Index: len(path) - 1, Msg: err.Error()}
		}
	} else if ok := s.op.implies(s.req.Tag, t.Tag); !ok || s.op.exhausted() {
		if s.op.exhausted() {
			s.out = true
			return nil, nil
		}
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
