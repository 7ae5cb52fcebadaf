from inception.table1 import (
    PAPER_DEPTH,
    ROW_NAMES,
    TABLE1,
    disagrees,
    paper_ops,
    paper_params,
)


def test_rows_are_the_papers():
    assert ROW_NAMES == ("conv1", "pool1", "conv2", "pool2", "3a", "3b", "pool3", "4a", "4b",
                         "4c", "4d", "4e", "pool4", "5a", "5b", "avgpool", "dropout", "linear",
                         "softmax")
    assert sum(r.depth for r in TABLE1) == PAPER_DEPTH


def test_inception_rows_add_up_to_their_output_depth():
    # Table 1's own consistency: #1x1 + #3x3 + #5x5 + pool proj = the output depth.
    for r in TABLE1:
        if r.type == "inception":
            assert r.n1x1 + r.n3x3 + r.n5x5 + r.pool_proj == r.output[2], r.name


def test_units_k_is_1024_and_m_is_a_million():
    conv2 = TABLE1[ROW_NAMES.index("conv2")]
    linear = TABLE1[ROW_NAMES.index("linear")]
    assert paper_params(conv2) == 64 * 64 + 64 * 9 * 192  # "112K", exactly
    assert paper_params(linear) == 1024 * 1000  # "1000K", exactly
    assert paper_ops(conv2) == 360e6


def test_disagrees_respects_tolerance_and_printed_rounding():
    assert not disagrees("100M", "M", 101.9e6)
    assert disagrees("100M", "M", 102.1e6)
    assert not disagrees("1M", "M", 1.024e6)  # within the printing's own rounding (0.5M)
    assert disagrees("2.7K", "K", 9408)
