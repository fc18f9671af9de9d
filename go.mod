module github.com/ecoupons/ecoupons

go 1.26.0

require go.step.sm/crypto v0.91.1

require (
	filippo.io/edwards25519 v1.2.0 // indirect
	github.com/ThalesGroup/crypto11 v1.6.2 // indirect
	github.com/miekg/pkcs11 v1.1.2 // indirect
	github.com/pkg/errors v0.9.1 // indirect
	github.com/thales-e-security/pool v0.0.2 // indirect
	golang.org/x/crypto v0.58.0 // indirect
	golang.org/x/sys v0.49.0 // indirect
	golang.org/x/term v0.47.0 // indirect
)
