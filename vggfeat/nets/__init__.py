"""The networks: Table 1 as data, the Sec. 3.2 dense view, feature maps, timm's conventions and
the preprocessing each set of weights carries. Nothing here reads files or images."""
