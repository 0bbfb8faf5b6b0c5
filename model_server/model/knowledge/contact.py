"""Contact: telephone numbers, e-mail addresses, URLs and domains.

Packages: phonenumbers 9.0.43 (Apache-2.0; libphonenumber's metadata: is a number valid, and for which region),
email-validator 2.4.0 (Unlicense; syntax only, `check_deliverability=False`: no DNS), tldextract 5.4.0 (BSD-3;
its bundled Public Suffix List snapshot, `suffix_list_urls=()` and `cache_dir=None`: never fetched, never written).
A number without a leading + or 00 is tried against a few regions (DEFAULT_REGIONS), after a cheap regex check.
"""
from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence

from swarm.model_server.model.knowledge.base import BaseSource

DEFAULT_REGIONS = ("US", "GB", "DE", "FR", "IN", "AU", "CA", "IT", "ES", "NL", "BR", "ID")
_PHONE = re.compile(r"^(?:tel:|phone:?|t:|\+)?[\s+()\d.\-/]{6,24}(?:\s*(?:x|ext\.?)\s*\d{1,5})?$", re.I)
_EMAIL = re.compile(r"^(?:mailto:)?[^@\s]+@[^@\s]+\.[^@\s]+$", re.I)
_URL = re.compile(r"^(?:https?|ftp)://\S+$", re.I)
_WWW = re.compile(r"^(?:www\.)?[a-z0-9\-]+(?:\.[a-z0-9\-]+)+(?:/\S*)?$", re.I)
_ISO_DATE = re.compile(r"^\d{4}[-/.]\d{1,2}[-/.]\d{1,2}$|^\d{1,2}[-/.]\d{1,2}[-/.]\d{4}$")
_IMAGE = re.compile(r"\.(?:jpe?g|png|gif|webp|svg|bmp|tiff?)(?:[?#]\S*)?$", re.I)


class ContactSource(BaseSource):
    name = "contact"
    features = ("phone_valid", "phone_possible", "phone_international", "email", "url", "domain_known_suffix",
                "image_url")
    evidence_features = ("phone_valid", "phone_possible", "email", "url", "domain_known_suffix", "image_url")
    generic_features = ("phone_possible",)
    provenance = ("phonenumbers==9.0.43 (Apache-2.0)", "email-validator==2.4.0 (Unlicense)",
                  "tldextract==5.4.0 (BSD-3; bundled Public Suffix List)")

    def _load(self) -> None:
        import phonenumbers
        import tldextract
        from email_validator import EmailNotValidError, validate_email

        self._pn = phonenumbers
        self._validate_email = validate_email
        self._email_error = EmailNotValidError
        self._extract = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None, fallback_to_snapshot=True)

    def phone_region(self, text: str) -> tuple[bool, bool, str | None]:
        """(valid, possible, region) of the first reading that parses."""
        digits = sum(ch.isdigit() for ch in text)
        if not (7 <= digits <= 15) or not _PHONE.match(text) or _ISO_DATE.match(text):
            return False, False, None
        pn = self._pn
        stripped = text.strip()
        international = stripped.startswith("+") or stripped.startswith("00")
        regions: tuple[str | None, ...] = (None,) if international else DEFAULT_REGIONS
        possible = False
        for region in regions:
            try:
                number = pn.parse("+" + stripped[2:] if stripped.startswith("00") else stripped, region)
            except pn.NumberParseException:
                continue
            if pn.is_valid_number(number):
                return True, True, pn.region_code_for_number(number)
            possible = possible or pn.is_possible_number(number)
        return False, possible, None

    def _vector(self, text: str) -> dict[str, float]:
        out: dict[str, float] = {}
        if len(text) > 300:
            return out
        if len(text) <= 40:
            valid, possible, _ = self.phone_region(text)
            if valid:
                out["phone_valid"] = 1.0
            if possible or valid:
                out["phone_possible"] = 1.0
                if text.startswith("+") or text.startswith("00"):
                    out["phone_international"] = 1.0
        if "@" in text and _EMAIL.match(text):
            try:
                self._validate_email(text.removeprefix("mailto:"), check_deliverability=False)
                out["email"] = 1.0
            except self._email_error:
                pass
        if " " not in text and "." in text:
            if _URL.match(text):
                out["url"] = 1.0
            if _URL.match(text) or _WWW.match(text):
                parts = self._extract(text)
                if parts.domain and parts.suffix:
                    out["domain_known_suffix"] = 1.0
                if _IMAGE.search(text):
                    out["image_url"] = 1.0
        return out

    def _detail(self, texts: Sequence[str]) -> str:
        regions = Counter(r for t in texts if len(t) <= 40 for r in [self.phone_region(t)[2]] if r)
        return f"phones mostly {regions.most_common(1)[0][0]}" if regions else ""
