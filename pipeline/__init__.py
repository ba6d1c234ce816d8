"""platepipe: nightly bulk license-plate recognition through NHN Cloud's Vehicle Plate OCR API."""

__version__ = "0.1.0"
