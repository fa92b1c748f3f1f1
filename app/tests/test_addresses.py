from hypothesis import given, settings, strategies as st

from exposure_api.addresses import (b58check_decode, b58check_encode, normalize_address,
                                    segwit_decode, segwit_encode)

VALID = [
    "1BQAPyku1ZibWGAgd8QePpW1vAKHowqLez",           # the toy example (P2PKH)
    "1A1zP1eP5QGefi2DMPTfTL5SLmv7DivfNa",           # P2PKH
    "3J98t1WpEZ73CNmQviecrnyiWrnqRhWNLy",           # P2SH
    "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4",   # BIP 173 P2WPKH
    "bc1qrp33g0q5c5txsp9arysrx4k6zdkfs4nce4xj0gdcccefvpysxf3qccfmv3",  # P2WSH
    "bc1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vqzk5jj0",  # BIP 350 P2TR
]
INVALID = [
    "", "1", "1BQAPyku1ZibWGAgd8QePpW1vAKHowqLeZ",   # checksum
    "1BQAPyku1ZibWGAgd8QePpW1vAKHowqLe0",            # '0' not in base58
    "mipcBbFg9gMiCh81Kj8tqqdgoZub1ZJRfn",            # testnet P2PKH
    "tb1qw508d6qejxtdg4y5r3zarvary0c5xw7kxpjzsx",   # testnet bech32
    "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t5",   # bech32 checksum
    "bc1Qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4",   # mixed case
    "bc1pw508d6qejxtdg4y5r3zarvary0c5xw7kw508d6qejxtdg4y5r3zarvary0c5xw7k7grplx",  # v1 with bech32 const
    "BC1SW50QA3JX3S",                                # v16 with the bech32 constant (BIP 350: invalid)
    "BC130XLXVLHEMJA6C4DQV22UAPCTQUPFHLXM9H8Z3K2E72Q4K9HCZ7VQ7ZWS8R",  # witness version 17
    "1" * 40, "x" * 200, "1BQAPyku1ZibWGAgd8QePpW1vAKHowqLez\x00", "１BQAPyku1ZibWGAgd8QePpW1vAKHowqLez",
]


def test_valid_addresses():
    for a in VALID:
        assert normalize_address(a) == a, a


def test_uppercase_bech32_is_normalized():
    assert normalize_address(VALID[3].upper()) == VALID[3]
    assert normalize_address("BC1SW50QGDZ25J") == "bc1sw50qgdz25j"  # BIP 350 vector, v16


def test_invalid_addresses():
    for a in INVALID:
        assert normalize_address(a) is None, a


@settings(max_examples=60, deadline=None)
@given(st.sampled_from([0x00, 0x05]), st.binary(min_size=20, max_size=20))
def test_base58check_roundtrip(version, payload):
    text = b58check_encode(version, payload)
    assert b58check_decode(text) == (version, payload)
    assert normalize_address(text) == text


@settings(max_examples=60, deadline=None)
@given(st.one_of(st.tuples(st.just(0), st.binary(min_size=20, max_size=20)),
                 st.tuples(st.just(0), st.binary(min_size=32, max_size=32)),
                 st.tuples(st.integers(1, 16), st.binary(min_size=2, max_size=40))))
def test_segwit_roundtrip(witver_program):
    witver, program = witver_program
    text = segwit_encode(witver, program)
    assert segwit_decode(text) == (witver, program)
    assert normalize_address(text) == text


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=100))
def test_arbitrary_text_never_raises(text):
    normalize_address(text)
