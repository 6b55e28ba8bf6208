"""The paper's published numbers and the protocol constants they were measured with: the one
place the code reads them from (docs/paper.md says where each comes from)."""

# Appendix B's test scales: VOC descriptors are averaged over five Q, Caltech's stacked over three,
# averaged over three random splits
VOC_Q = (256, 384, 512, 640, 768)
CALTECH_Q = (256, 384, 512)
CALTECH_SPLITS = 3

# The paper's nets as built here, and the authors' Caffe release of D and E
NET_ARCH = {"width": 1.0, "fc_dim": 4096, "batch_norm": False, "crop": 224}
CAFFE_RELEASE = {"D": "VGG_ILSVRC_16_layers", "E": "VGG_ILSVRC_19_layers"}

# Top-1 / top-5 val error (%) of the scale-jittered nets (S in [256, 512]), Tables 3-7
ILSVRC_JITTERED = {
    "single": {"C": (27.3, 8.8), "D": (25.6, 8.1), "E": (25.5, 8.0)},  # Table 3, Q = 384
    "multi": {"C": (26.3, 8.2), "D": (24.8, 7.5), "E": (24.8, 7.5)},  # Table 4, Q = {256, 384, 512}
    "multicrop": {"D": (24.6, 7.5), "E": (24.6, 7.4)},  # Table 5, 150 crops
    "both": {"D": (24.4, 7.2), "E": (24.4, 7.1)},  # Table 5, multi-crop & dense
    "fusion": {"D&E": (23.7, 6.8)},  # Table 7, multi-crop & dense of D and E
}
# Table 3 at fixed S = 256, Q = S: top-1 / top-5 val error (%)
ILSVRC_FIXED = {
    "A": (29.6, 10.4), "A-LRN": (29.7, 10.5), "B": (28.7, 9.9),
    "C": (28.1, 9.4), "D": (27.0, 8.8), "E": (27.3, 9.0),
}  # fmt: skip

# Table 11: VOC mAP (%) by year, and Caltech mean class recall (%) as (mean, std) over 3 splits
VOC_MAP = {
    "Chatfield et al. 2014": {2007: 82.4, 2012: 83.2},
    "VGG Net-D": {2007: 89.3, 2012: 89.0},
    "VGG Net-E": {2007: 89.3, 2012: 89.0},
    "VGG Net-D & Net-E": {2007: 89.7, 2012: 89.3},
}
CALTECH_RECALL = {
    "caltech101": {
        "Chatfield et al. 2014": (88.4, 0.6),
        "VGG Net-D": (91.8, 1.0),
        "VGG Net-E": (92.3, 0.5),
        "VGG Net-D & Net-E": (92.7, 0.5),
    },
    "caltech256": {
        "Chatfield et al. 2014": (77.6, 0.1),
        "VGG Net-D": (85.0, 0.2),
        "VGG Net-E": (85.1, 0.3),
        "VGG Net-D & Net-E": (86.2, 0.3),
    },
}
# Table 12: VOC-2012 action classification mAP (%), D & E stacked
VOC_ACTION_MAP = {"whole image": 79.2, "whole image + person box": 84.0}
