"""Finding a bank card's payment application: PPSE, else PSE and its records, else known AIDs.

The PPSE (2PAY.SYS.DDF01) exists only on the contactless interface; in a contact slot the card
offers the PSE (1PAY.SYS.DDF01), whose FCI names a short EF (tag 88) of directory records
(`70` templates of `61` entries) read from record 1 until `6A 83`; a card without a PSE is
found by selecting the AIDs the terminal knows (EMV Book 1 12.3; openemv/emv-utils
src/emv_tal.c emv_tal_read_pse and src/emv.c "If PSE failed or no apps found by PSE, use list
of AIDs method"; CardContact/scsh-scripts emv/reademv.js reads `00 B2 rec (sfi << 3 | 4)`).
The PPSE answer nests the entries as 6F / A5 / BF0C / 61 (4F AID, 50 label, 87 priority):
javisHuang/Learn emv/Initiate_Application.md and apuigsech/emv-framework
test-tools/emv-basic-procesing-options.py.
Only directory data and FCIs are read: never a record of the payment application, so never
the card number.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import structlog

from drivers.cardreader import apdu
from drivers.cardreader.errors import ApduError, ProtocolViolation, RecordNotFound, WrongCard
from drivers.cardreader.records import (
    BankCardInfo,
    choose_application,
    parse_application_fci,
    parse_ppse,
    parse_pse_record,
    parse_pse_sfi,
)

log = structlog.get_logger(__name__)

Command = Callable[[bytes], Awaitable[bytes]]

# EMV directory files are short; a card still answering records past this is broken.
MAX_PSE_RECORDS = 16


async def _from_ppse(command: Command) -> BankCardInfo | None:
    try:
        fci = await command(apdu.select_aid(apdu.PPSE_AID))
    except ApduError as err:
        log.info("bank_ppse_absent", answer=err.code)
        return None
    return parse_ppse(fci)


async def _from_pse(command: Command) -> BankCardInfo | None:
    try:
        fci = await command(apdu.select_aid(apdu.PSE_AID))
    except ApduError as err:
        log.info("bank_pse_absent", answer=err.code)
        return None
    entries: list[tuple[int, str, str]] = []
    try:
        sfi = parse_pse_sfi(fci)
        for record in range(1, MAX_PSE_RECORDS + 1):
            try:
                data = await command(apdu.read_record_sfi(sfi, record))
            except RecordNotFound:
                break
            entries += parse_pse_record(data)
    except (ProtocolViolation, ApduError) as err:
        # EMV: a PSE that cannot be processed leaves the list-of-AIDs method.
        log.warning("bank_pse_unusable", error=type(err).__name__)
        return None
    if not entries:
        log.info("bank_pse_empty")
        return None
    return choose_application(entries, "pse")


async def _from_known_aids(command: Command) -> BankCardInfo | None:
    for aid in apdu.UNIONPAY_AIDS:
        try:
            fci = await command(apdu.select_aid(aid))
        except ApduError:
            continue
        return parse_application_fci(fci, aid)
    return None


async def find_payment_application(command: Command, *, device: str | None = None) -> BankCardInfo:
    """The card's preferred payment application and how it was found (`source`)."""
    for method in (_from_ppse, _from_pse, _from_known_aids):
        found = await method(command)
        if found is not None:
            log.info("bank_application_found", device=device, source=found.source, aid=found.aid)
            return found
    raise WrongCard(
        "not a bank card (no PPSE, no PSE, none of the known AIDs)", device=device, expected="bank"
    )
