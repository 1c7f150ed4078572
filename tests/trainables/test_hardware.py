import torch

from trainables.hardware import describe_hardware


def test_cpu_description_names_the_processor_and_threads():
    text = describe_hardware(torch.device("cpu"))
    assert text.startswith("cpu: ") and f"({torch.get_num_threads()} torch threads)" in text
    assert len(text) > len("cpu:  (1 torch threads)")
