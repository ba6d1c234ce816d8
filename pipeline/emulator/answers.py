"""The envelope of every NHN answer: the result codes, NHN's message for each, and a Decision.

A Decision is what the emulator chose for one call (a code, the ``result`` if any, what it
counted); ``Decision.answer()`` turns it into the JSON the wire gets. Imports nothing of the
emulator, so every other module can use it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

SUCCESS = 0
UNKNOWN_ERROR = -1
INVALID_PARAMETER = 4000001
INVALID_FILE = 4000002
INVALID_FILE_TYPE = 4000003
EMPTY_FILE = 4000004
HEADERS_MISSING = 4000005
CALL_LIMIT_EXCEEDED = 4000006
PLATE_NOT_FOUND = 4000201
INVALID_KEYS = 4010001
TOO_LARGE = 4131000
SERVER_ERROR = 5000001
TEMPORARILY_UNAVAILABLE = 5000503
OCR_API_FAIL = 5004001
OCR_API_RETURN_EMPTY = 5004002
OCR_RECOGNITION_FAIL = 5004003
# NHN's resultMessage for each code it documents (Vehicle Plate OCR > Error Code); 4000005 and
# 4000006 are not in that table, so their text is ours.
RESULT_MESSAGES = {
    SUCCESS: "SUCCESS",
    UNKNOWN_ERROR: "Unknown error.",
    INVALID_PARAMETER: "Invalid parameter.",
    INVALID_FILE: "Invalid file.",
    INVALID_FILE_TYPE: "Invalid file type.",
    EMPTY_FILE: "Uploaded file is empty.",
    HEADERS_MISSING: "required headers missing",
    CALL_LIMIT_EXCEEDED: "API call limit exceeded",
    PLATE_NOT_FOUND: "Vehicle plate not found in the image.",
    INVALID_KEYS: "Invalid appKey or secretKey.",
    TOO_LARGE: "Request size is larger than permissible limit. the permissible limit is 5mb.",
    SERVER_ERROR: "Internal Api fail.",
    TEMPORARILY_UNAVAILABLE: (
        "The API you requested is temporarily unavailable. Please try again later."
    ),
    OCR_API_FAIL: "Vehicle Plate OCR Api fail.",
    OCR_API_RETURN_EMPTY: "Vehicle Plate OCR Api returned empty body.",
    OCR_RECOGNITION_FAIL: "Vehicle Plate OCR failed to recognize the vehicle plate.",
    # The rest of NHN's table: codes that stop a run (or fail an image) for everyone alike,
    # given only as faults a test asks for by name.
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    415: "Unsupported Media Type",
    4000401: "The service is not enabled.",
    4010002: "Invalid uuid.",
    4010003: "Not allowed user.",
    4010004: "Invalid project.",
    4010005: "Unauthorized role.",
}
# The answers an image gets on its own merits; faults and refusals never use these codes.
IMAGE_ANSWER_CODES = frozenset({SUCCESS, PLATE_NOT_FOUND})


@dataclass(frozen=True)
class Decision:
    code: int | None  # None: a fault that sends no NHN answer at all
    result: dict[str, Any] | None = None
    image_sha256: str | None = None
    admitted: bool = False  # passed the credential check and the call limit
    rate_limited: bool = False
    fault: str | None = None  # replaces the answer, or for "slow" delays it

    def answer(self) -> dict[str, Any] | None:
        """The NHN JSON answer, or None when the wire gets something else."""
        if self.code is None:
            return None
        header = {
            "isSuccessful": self.code == SUCCESS,
            "resultCode": self.code,
            "resultMessage": RESULT_MESSAGES[self.code],
        }
        answer: dict[str, Any] = {"header": header}
        if self.result is not None:
            answer["result"] = self.result
        return answer
