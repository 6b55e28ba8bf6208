"""Images and labelled sets on disk: the one decoder, image identity, the VOC devkit and tasks,
Caltech, and the ImageFolder / ILSVRC layouts."""
