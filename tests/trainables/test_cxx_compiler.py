"""The key a -march=native build is cached under names the CPU on every platform: machines that share a
cache directory (a cluster's nodes, two Macs with one home directory) never load each other's build."""
import platform

import pytest

from trainables import cxx_compiler

CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 25
model\t\t: 1
model name\t: AMD EPYC 7B13
flags\t\t: fpu sse sse2 avx avx2 fma
cpu MHz\t\t: 2445.432

processor\t: 1
vendor_id\t: AuthenticAMD
cpu family\t: 25
model\t\t: 1
model name\t: AMD EPYC 7B13
flags\t\t: fpu sse sse2 avx avx2 fma
cpu MHz\t\t: 2301.000
"""


@pytest.fixture
def fixed_compiler(monkeypatch):
    """build_key without running a compiler: its identity is a fixed string."""
    monkeypatch.setattr(cxx_compiler, "compiler_identity", lambda compiler: f"{compiler}\nc++ 12.2.0")


def _key() -> str:
    return cxx_compiler.build_key("source", "/usr/bin/c++", ["-O3", "-march=native"])


def _on(monkeypatch, system: str, processor: str = "", machine: str = "x86_64") -> None:
    monkeypatch.setattr(platform, "system", lambda: system)
    monkeypatch.setattr(platform, "processor", lambda: processor)
    monkeypatch.setattr(platform, "machine", lambda: machine)
    monkeypatch.delenv("PROCESSOR_IDENTIFIER", raising=False)


def test_linux_names_the_model_and_hashes_the_flags(monkeypatch, fixed_compiler):
    _on(monkeypatch, "Linux")
    monkeypatch.setattr(cxx_compiler, "_read_cpuinfo", lambda: CPUINFO)
    description, key = cxx_compiler.cpu_description(), _key()
    assert description.startswith("Linux x86_64: vendor_id=AuthenticAMD; cpu family=25; model=1; "
                                   "model name=AMD EPYC 7B13; features ")
    assert "MHz" not in description  # a clock that varies from read to read must not rebuild
    monkeypatch.setattr(cxx_compiler, "_read_cpuinfo", lambda: CPUINFO.replace("2445.432", "1500.000"))
    assert _key() == key
    monkeypatch.setattr(cxx_compiler, "_read_cpuinfo", lambda: CPUINFO.replace("EPYC 7B13", "EPYC 9654"))
    assert _key() != key
    monkeypatch.setattr(cxx_compiler, "_read_cpuinfo", lambda: CPUINFO.replace(" fma", " fma avx512f"))
    assert cxx_compiler.cpu_description() != description and _key() != key  # the same name, other features


def test_linux_without_cpuinfo_falls_back_to_the_processor(monkeypatch, fixed_compiler):
    _on(monkeypatch, "Linux", processor="x86_64 family 6")
    monkeypatch.setattr(cxx_compiler, "_read_cpuinfo", lambda: "")
    assert cxx_compiler.cpu_description() == "Linux x86_64: x86_64 family 6"


def _fake_sysctl(brand: str, optional: str):
    def sysctl(*args: str) -> str:
        return {("-n", "machdep.cpu.brand_string"): brand, ("hw.optional",): optional}.get(args, "")
    return sysctl


def test_macos_names_the_brand_and_hashes_the_features(monkeypatch, fixed_compiler):
    # platform.processor() is "arm" on every Apple-silicon Mac: it cannot tell an M1 from an M3
    _on(monkeypatch, "Darwin", processor="arm", machine="arm64")
    no_bf16, bf16 = "hw.optional.neon: 1\nhw.optional.arm.FEAT_BF16: 0", "hw.optional.neon: 1\nhw.optional.arm.FEAT_BF16: 1"
    monkeypatch.setattr(cxx_compiler, "_sysctl", _fake_sysctl("Apple M1", no_bf16))
    description, key = cxx_compiler.cpu_description(), _key()
    assert description.startswith("Darwin arm64: Apple M1; features ")
    monkeypatch.setattr(cxx_compiler, "_sysctl", _fake_sysctl("Apple M3", no_bf16))
    assert _key() != key
    monkeypatch.setattr(cxx_compiler, "_sysctl", _fake_sysctl("Apple M1", bf16))
    assert _key() != key


def test_macos_without_sysctl_falls_back_to_the_processor(monkeypatch):
    _on(monkeypatch, "Darwin", processor="i386")
    monkeypatch.setattr(cxx_compiler, "_sysctl", lambda *args: "")
    assert cxx_compiler.cpu_description() == "Darwin x86_64: i386"


def test_windows_and_others_name_the_processor_and_machine(monkeypatch, fixed_compiler):
    _on(monkeypatch, "Windows", processor="Intel64 Family 6 Model 85 Stepping 7, GenuineIntel", machine="AMD64")
    assert cxx_compiler.cpu_description() == "Windows AMD64: Intel64 Family 6 Model 85 Stepping 7, GenuineIntel"
    key = _key()
    monkeypatch.setattr(platform, "processor", lambda: "Intel64 Family 6 Model 143 Stepping 8, GenuineIntel")
    assert _key() != key
    _on(monkeypatch, "FreeBSD", processor="")
    assert cxx_compiler.cpu_description() == "FreeBSD x86_64: unknown CPU"


def test_the_key_names_source_compiler_and_flags(monkeypatch, tmp_path):
    _on(monkeypatch, "Linux")
    monkeypatch.setattr(cxx_compiler, "_read_cpuinfo", lambda: CPUINFO)
    fake = tmp_path / "c++"

    def compiler(version: str) -> str:
        fake.write_text(f"#!/bin/sh\necho '{version}'\n")
        fake.chmod(0o755)
        return str(fake)

    key = cxx_compiler.build_key("source", compiler("c++ 12.2.0"), ["-O3"])
    assert cxx_compiler.build_key("source", compiler("c++ 12.2.0"), ["-O3"]) == key
    assert cxx_compiler.build_key("source", compiler("c++ 13.1.0"), ["-O3"]) != key  # an updated compiler
    assert cxx_compiler.build_key("source", str(tmp_path / "missing"), ["-O3"]) != key
    assert cxx_compiler.build_key("source", compiler("c++ 12.2.0"), ["-O2"]) != key
    assert cxx_compiler.build_key("source 2", compiler("c++ 12.2.0"), ["-O3"]) != key
