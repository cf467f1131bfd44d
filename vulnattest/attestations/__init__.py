"""In-toto statements with the cosign vuln predicate, DSSE envelopes, and how they are attached to images."""

from vulnattest.attestations.dsse import Envelope, sign_statement
from vulnattest.attestations.statement import VULN_PREDICATE_TYPE, Invocation, vuln_statement

__all__ = ["VULN_PREDICATE_TYPE", "Envelope", "Invocation", "sign_statement", "vuln_statement"]
