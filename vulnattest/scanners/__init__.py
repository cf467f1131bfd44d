"""Vulnerability scanners behind one protocol."""

from vulnattest.scanners.interface import Finding, Scanner, ScannerInfo, ScanReport, severity_counts

__all__ = ["Finding", "ScanReport", "Scanner", "ScannerInfo", "severity_counts"]
