"""Biological alphabets: DNA, RNA and protein residues, IUPAC ambiguity codes and complements.

One place for what a residue is, shared by the sequence readers (``selfsup.data.sequence``), the sequence
tokenizers (``selfsup.data.seq_tokens``) and the sequence views (``selfsup.views.sequence``).

- ``core``: the residues k-mers are built from (ACGT, ACGU, the 20 standard amino acids).
- ``ambiguous``: IUPAC ambiguity codes kept as their own tokens (N, R, Y, ... for nucleotides; B, Z, X, J and
  the rare U (selenocysteine) and O (pyrrolysine) for proteins).
- ``complement``: Watson-Crick complements of every nucleotide letter, ambiguity codes included (R = A/G pairs
  with Y = C/T, ...); None for proteins.

Soft-masked (lower-case) residues are upper-cased by the readers unless ``data.soft_mask=keep``, which keeps
them as tokens of their own (``residues(alphabet, keep_case=True)``).
"""

from __future__ import annotations

from dataclasses import dataclass

from selfsup.errors import UserError

ALPHABETS = ("dna", "rna", "protein")
SOFT_MASK = ("drop", "keep")  # drop: lower-case residues are upper-cased; keep: they are tokens of their own

_NUC_AMBIGUOUS = "NRYKMSWBDHV"
_DNA_COMPLEMENT = {"A": "T", "C": "G", "G": "C", "T": "A", "N": "N", "R": "Y", "Y": "R", "K": "M", "M": "K",
                   "S": "S", "W": "W", "B": "V", "V": "B", "D": "H", "H": "D"}  # fmt: skip


@dataclass(frozen=True)
class Alphabet:
    name: str
    core: str
    ambiguous: str
    complement: dict[str, str] | None

    @property
    def letters(self) -> str:
        """Every upper-case residue letter: core then ambiguity codes."""
        return self.core + self.ambiguous

    def residues(self, keep_case: bool = False) -> str:
        """The residue tokens: upper-case letters, then (``keep_case``) their lower-case forms."""
        return self.letters + (self.letters.lower() if keep_case else "")

    def complement_of(self, letter: str) -> str:
        if self.complement is None:
            raise UserError(f"{self.name} has no complement; reverse complements are for DNA and RNA")
        c = self.complement[letter.upper()]
        return c.lower() if letter.islower() else c


DNA = Alphabet("dna", "ACGT", _NUC_AMBIGUOUS, _DNA_COMPLEMENT)
RNA = Alphabet("rna", "ACGU", _NUC_AMBIGUOUS,
               {("U" if k == "T" else k): ("U" if v == "T" else v) for k, v in _DNA_COMPLEMENT.items()})  # fmt: skip
PROTEIN = Alphabet("protein", "ACDEFGHIKLMNPQRSTVWY", "BZXJUO", None)
_BY_NAME = {"dna": DNA, "rna": RNA, "protein": PROTEIN}


def get_alphabet(name: str) -> Alphabet:
    """The alphabet called ``name`` (dna, rna or protein); anything else is a one-line UserError."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise UserError(f"data.alphabet={name!r} is not an alphabet; use dna, rna, protein or auto") from None


NUCLEOTIDE_SHARE = 0.9  # of the letters: at least this share nucleotide letters (ACGTUN) makes a file DNA or RNA


def detect_alphabet(letters) -> str:
    """The alphabet of the upper-case letters seen in a file, given as {letter: count} (or a set, every letter
    counted once): dna when they are all nucleotide letters (IUPAC codes included) or at least 90% of them are A,
    C, G, T or N (U: rna when it outnumbers T), else protein.
    A share rather than "every letter", so one stray letter in a genome does not make it a protein file: the
    records holding it are then skipped and counted by the reader. Proteins' A/C/G/T/N make about a third of
    their residues."""
    counts = {c: 1 for c in letters} if isinstance(letters, set | frozenset) else dict(letters)
    total = sum(counts.values())
    nuc = sum(counts.get(c, 0) for c in "ACGTUN")
    only_nucleotide_letters = set(counts) <= set(DNA.letters) | {"U"}
    if total and (only_nucleotide_letters or nuc >= NUCLEOTIDE_SHARE * total):
        return "rna" if counts.get("U", 0) > counts.get("T", 0) else "dna"
    return "protein"


__all__ = ["ALPHABETS", "Alphabet", "DNA", "PROTEIN", "RNA", "SOFT_MASK", "detect_alphabet", "get_alphabet"]
