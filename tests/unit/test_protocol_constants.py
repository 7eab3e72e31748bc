"""The compiled path's protocol constants (hbroker_ext/protocol.pxd, exposed as
`hbroker_ext.routing.CONSTANTS`) agree with their Python counterparts: reason codes with
hbroker.reason_codes, packet types and property ids with hbroker_ext.codec, delivery states
and acknowledgement outcomes with the names hbroker.session exports."""

import hbroker_ext.codec as codec
import hbroker_ext.routing as routing
from hbroker_ext.routing import CONSTANTS

from hbroker import hooks, session
from hbroker.reason_codes import ReasonCode, reason_name


def test_reason_codes_match_reason_codes_py() -> None:
    codes = {name: value for name, value in CONSTANTS.items() if name.startswith("RC_")}
    assert codes
    for name, value in codes.items():
        assert ReasonCode[name.removeprefix("RC_")] == value, name


def test_logged_reason_names_match_reason_codes_py() -> None:
    assert routing.REASON_NAMES
    for code, name in routing.REASON_NAMES.items():
        assert reason_name(code) == name, hex(code)


def test_packet_types_and_property_ids_match_the_codec() -> None:
    names = [name for name in CONSTANTS if name.startswith(("T_", "P_"))]
    assert len([n for n in names if n.startswith("T_")]) == 15
    for name in names:
        assert getattr(codec, name[2:]) == CONSTANTS[name], name


def test_states_and_outcomes_match_the_python_names() -> None:
    assert session.AWAITING_PUBACK_OR_PUBREC == CONSTANTS["S_AWAITING_PUBACK_OR_PUBREC"]
    assert session.AWAITING_PUBCOMP == CONSTANTS["S_AWAITING_PUBCOMP"]
    assert session.ACK_ACCEPTED == CONSTANTS["A_ACCEPTED"]
    assert session.ACK_UNKNOWN == CONSTANTS["A_UNKNOWN"]
    assert session.ACK_WRONG_TYPE == CONSTANTS["A_WRONG_TYPE"]
    assert len(set(CONSTANTS[n] for n in ("A_ACCEPTED", "A_UNKNOWN", "A_WRONG_TYPE"))) == 3


def test_drop_reasons_match_hbroker_hooks() -> None:
    """The compiled code's DROP_* strings are hbroker.hooks's reasons of on_message_dropped,
    every one of them."""
    drops = {name: getattr(routing, name) for name in dir(routing) if name.startswith("DROP_")}
    for name, value in drops.items():
        assert getattr(hooks, name.removeprefix("DROP_")) == value, name
    assert sorted(drops.values()) == sorted(hooks.DROP_REASONS)
