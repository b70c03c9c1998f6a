"""Speed and cost benchmarks run by ``tools/benchmark.py`` (results in docs/benchmarks.md).

* :mod:`.paper_loop`: the MaskAQ synthesis loop written plainly, as in the authors' code;
* :mod:`.synthesis_speed`, :mod:`.qat_cost`, :mod:`.deploy`: one benchmark each;
* :mod:`.common`: tiny models, interleaved timing, machine description, doc sections.
"""
