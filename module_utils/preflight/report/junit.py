"""JUnit XML for CI systems: one testsuite per host, one testcase per check.

fail -> <failure>, a host that did not finish -> its check fails, skip -> <skipped>, warn -> passes with the
warning in <system-out> (CI goes red on what is broken, not on advice).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from . import fleet


def junit_xml(docs: list[dict], run_id: str, time: str) -> str:
    root = ET.Element("testsuites", name=f"preflight {run_id}")
    total = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    for doc in sorted(docs, key=lambda d: d["host"]):
        c = fleet.counts(doc["checks"])
        suite = ET.SubElement(
            root,
            "testsuite",
            name=doc["host"],
            timestamp=time,
            hostname=doc["host"],
            tests=str(len(doc["checks"])),
            failures=str(c["fail"]),
            errors="0",
            skipped=str(c["skip"]),
        )
        props = ET.SubElement(suite, "properties")
        for key in ("run_id", "status", "verdict", "level", "gpu_class"):
            ET.SubElement(props, "property", name=key, value=str(doc[key]))
        for check in doc["checks"]:
            case = ET.SubElement(suite, "testcase", classname=f"preflight.{doc['host']}", name=check["id"], time="0")
            message = f"{check['title']}: {check['reason']}"
            if check["status"] == "fail":
                failure = ET.SubElement(case, "failure", message=message, type=check["category"])
                failure.text = (
                    f"measured: {check['measured']!r}\nexpected: {check['expected']!r}\n"
                    f"threshold: {check['threshold']!r}\n{check['reason']}"
                )
            elif check["status"] == "skip":
                ET.SubElement(case, "skipped", message=message)
            elif check["status"] == "warn":
                out = ET.SubElement(case, "system-out")
                out.text = f"WARN {message}"
        total["tests"] += len(doc["checks"])
        total["failures"] += c["fail"]
        total["skipped"] += c["skip"]
    for key, value in total.items():
        root.set(key, str(value))
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
