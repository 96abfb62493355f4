"""Money as integer minor units with ISO 4217 exponents. Floats never enter."""

from __future__ import annotations

import re
from dataclasses import dataclass

from domain.errors import CurrencyMismatch, InvalidMoney, UnknownCurrency

_ZERO = "BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX UYI VND VUV XAF XOF XPF"
_THREE = "BHD IQD JOD KWD LYD OMR TND"
_FOUR = "CLF UYW"
_TWO = (
    "AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BMD BND BOB BRL BSD BTN BWP "
    "BYN BZD CAD CDF CHF CNY COP CRC CUP CVE CZK DKK DOP DZD EGP ERN ETB EUR FJD FKP GBP "
    "GEL GHS GIP GMD GTQ GYD HKD HNL HTG HUF IDR ILS INR IRR JMD KES KGS KHR KPW KYD KZT "
    "LAK LBP LKR LRD LSL MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN MYR MZN NAD NGN "
    "NIO NOK NPR NZD PAB PEN PGK PHP PKR PLN QAR RON RSD RUB SAR SBD SCR SDG SEK SGD SHP "
    "SLE SOS SRD SSP STN SVC SYP SZL THB TJS TMT TOP TRY TTD TWD TZS UAH USD UYU UZS VES "
    "WST XCD YER ZAR ZMW ZWG"
)

EXPONENTS: dict[str, int] = {
    **dict.fromkeys(_TWO.split(), 2),
    **dict.fromkeys(_ZERO.split(), 0),
    **dict.fromkeys(_THREE.split(), 3),
    **dict.fromkeys(_FOUR.split(), 4),
}

# Above this no single payment is plausible; it also keeps amounts inside Avro's long.
MAX_MINOR_UNITS = 10**15


def exponent(currency: str) -> int:
    """The number of minor-unit digits of an ISO 4217 currency code."""
    try:
        return EXPONENTS[currency]
    except KeyError:
        raise UnknownCurrency(f"unsupported currency {currency!r}") from None


# `[0-9]`, never `\d`: `\d` also matches other scripts' digits.
_DECIMAL = re.compile(r"([0-9]{1,18})(?:\.([0-9]+))?")


def to_decimal_string(amount: int, currency: str) -> str:
    """Minor units as a gateway's decimal string: 1000 USD -> "10.00", 1000 JPY -> "1000"."""
    exp = exponent(currency)
    if exp == 0:
        return str(amount)
    whole, frac = divmod(amount, 10**exp)
    return f"{whole}.{frac:0{exp}d}"


def from_decimal_string(value: object, currency: str) -> int:
    """A decimal string as exact minor units ("10.5" USD -> 1050); never through a float."""
    exp = exponent(currency)
    match = _DECIMAL.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise InvalidMoney(f"not a decimal amount: {value!r}")
    whole, frac = match.group(1), match.group(2) or ""
    if len(frac) > exp:
        raise InvalidMoney(f"{value!r} has more decimals than {currency} allows ({exp})")
    minor: int = int(whole) * 10**exp + int(frac.ljust(exp, "0") or "0")
    return minor


def normalize_currency(currency: str) -> str:
    code = currency.strip().upper()
    exponent(code)
    return code


@dataclass(frozen=True, slots=True)
class Money:
    """An amount in integer minor units of one currency (1000 USD minor units = $10.00)."""

    amount: int
    currency: str

    def __post_init__(self) -> None:
        # bool is an int subclass; a float is never money.
        if type(self.amount) is not int:
            raise InvalidMoney(f"amount must be an integer in minor units, got {self.amount!r}")
        if self.amount < 0:
            raise InvalidMoney("amount must not be negative")
        if self.amount > MAX_MINOR_UNITS:
            raise InvalidMoney("amount is too large")
        if self.currency != self.currency.upper():
            raise UnknownCurrency(
                f"currency must be an upper-case ISO 4217 code: {self.currency!r}"
            )
        exponent(self.currency)

    def _same(self, other: Money) -> None:
        if other.currency != self.currency:
            raise CurrencyMismatch(f"cannot combine {self.currency} with {other.currency}")

    def __add__(self, other: Money) -> Money:
        self._same(other)
        return Money(self.amount + other.amount, self.currency)

    def __sub__(self, other: Money) -> Money:
        self._same(other)
        return Money(self.amount - other.amount, self.currency)

    def __le__(self, other: Money) -> bool:
        self._same(other)
        return self.amount <= other.amount

    def __lt__(self, other: Money) -> bool:
        self._same(other)
        return self.amount < other.amount

    def is_zero(self) -> bool:
        return self.amount == 0

    def display(self) -> str:
        """Human form, e.g. '10.00 USD' or '1000 JPY'; for logs and docs only."""
        return f"{to_decimal_string(self.amount, self.currency)} {self.currency}"
