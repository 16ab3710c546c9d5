"""The idcard factor for other holders' cards: the document number is the subject, checked by type.

Numbers: PAK310080010103 (a specimen foreigner's card, ICAO 7-3-1 check digit), KAZ110090123105 and
810000199408230021 / 830000199201300022 / 911398199012310021 (howardli/CredentialKit test vectors); sources in
drivers/idcard/foreigner.py and drivers/idcard/hmt.py.
"""

from __future__ import annotations

import datetime as dt
import json

import pytest

from gateway.auth import FactorFailed
from tests.auth.helpers import CITIZEN_A, AuditLog, EngineFactory

FOREIGNER = "PAK310080010103"
HK = "810000199408230021"
TW = "830000199201300022"
PHOTO = b"\x01wlt" * 256


@pytest.mark.parametrize(
    ("document_type", "number", "masked"),
    [
        ("foreign_permanent", FOREIGNER, "PAK********0103"),
        ("foreign_permanent", "KAZ110090123105", "KAZ********3105"),
        ("hmt_residence", HK, "810***********0021"),
        ("hmt_residence", TW, "830***********0022"),
        ("foreign_permanent_2023", "911398199012310021", "911***********0021"),
        ("resident", CITIZEN_A, CITIZEN_A[:3] + "*" * 11 + CITIZEN_A[-4:]),
    ],
)
async def test_the_document_number_is_the_masked_subject(
    make_engine: EngineFactory, audit: AuditLog, document_type: str, number: str, masked: str
) -> None:
    engine = await make_engine()
    state = engine.new_state("s1")
    factor = await engine.prove_idcard(state, number, photo=PHOTO, document_type=document_type)
    assert factor.subject.masked == masked
    assert factor.subject.kind == "citizen"
    assert factor.subject == engine.keys.citizen(number)
    assert factor.as_dict()["document_type"] == document_type
    assert factor.as_dict()["subject"] == masked
    assert state.idcard is not None and state.idcard.photo == PHOTO
    trail = audit.dump()
    assert masked in trail and number not in trail


@pytest.mark.parametrize(
    ("document_type", "number"),
    [
        ("foreign_permanent", "PAK310080010104"),  # check digit
        ("foreign_permanent", CITIZEN_A),  # a resident number on a foreigner's card
        ("hmt_residence", "810000199408230022"),  # check character
        ("hmt_residence", CITIZEN_A),  # not an 81/82/83 address code
        ("resident", FOREIGNER),
        ("foreign_permanent_2023", "911398199012310022"),  # check character
        ("foreign_permanent_2023", CITIZEN_A),  # not a foreigner's number
    ],
)
async def test_a_number_that_does_not_fit_its_document_fails(
    make_engine: EngineFactory, document_type: str, number: str
) -> None:
    engine = await make_engine()
    state = engine.new_state("s1")
    with pytest.raises(FactorFailed) as err:
        await engine.prove_idcard(state, number, photo=PHOTO, document_type=document_type)
    assert err.value.reason == "bad_id_number"
    assert state.factors == [] and state.idcard is None


async def test_an_expired_foreigners_card_fails(make_engine: EngineFactory) -> None:
    engine = await make_engine()
    state = engine.new_state("s1")
    with pytest.raises(FactorFailed) as err:
        await engine.prove_idcard(
            state,
            FOREIGNER,
            photo=PHOTO,
            valid_until=dt.date(2001, 1, 1),
            document_type="foreign_permanent",
        )
    assert err.value.reason == "card_expired"


async def test_an_unknown_document_type_is_a_programming_error(make_engine: EngineFactory) -> None:
    engine = await make_engine()
    with pytest.raises(ValueError, match="unknown document type"):
        await engine.prove_idcard(engine.new_state("s1"), FOREIGNER, document_type="passport")


async def test_ops_can_name_a_foreigners_subject_by_its_number(make_engine: EngineFactory) -> None:
    engine = await make_engine()
    assert engine.subject_for(FOREIGNER) == engine.keys.citizen(FOREIGNER)
    assert json.dumps(engine.subject_for(FOREIGNER).masked) == '"PAK********0103"'
