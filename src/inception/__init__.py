"""inception: GoogLeNet from *Going Deeper with Convolutions* (Szegedy et al., 2014).

>>> import inception
>>> model = inception.googlenet()                     # the paper's network, aux heads included
>>> small = inception.googlenet(num_classes=10, stem="small", image_size=28, width=0.5,
...                             aux_pool="adaptive")  # 4a is 7x7: a pool that covers it
>>> trained = inception.load("runs/fashion-mnist-20261125-101500")   # model, preprocessing, classes
>>> inception.predict(trained, "shirt.jpg", topk=3)   # files, PIL images or uint8/float tensors
>>> inception.explain(trained, "shirt.jpg", topk=3)   # where each top class is seen: CAM, Grad-CAM
>>> inception.visualize(trained, "4c", "0-15")      # images that excite 4c's channels 0-15
>>> inception.dream(trained, "shirt.jpg", "4c")     # DeepDream: the picture, changed to excite 4c
>>> ported = inception.from_torchvision("googlenet-1378be20.pth", transform_input=True)
>>> caffe = inception.from_caffe("bvlc_googlenet.caffemodel")   # Caffe's model zoo weights
"""

from inception.caffe import CaffeError, from_caffe
from inception.config import ConfigError, GoogLeNetConfig
from inception.cost import table1_cost
from inception.dream import dream
from inception.explain import ExplainError, Explanation, explain, save_explanations
from inception.inference import optimize_for_inference
from inception.model import GoogLeNet, GoogLeNetOutput, googlenet, googlenet_loss
from inception.modules import AuxClassifier, ConvReLU, Inception
from inception.predict import predict
from inception.visualize import visualize
from inception.weights import LoadedModel, WeightsError, from_torchvision, load

__all__ = [
    "AuxClassifier",
    "CaffeError",
    "ConfigError",
    "ConvReLU",
    "ExplainError",
    "Explanation",
    "GoogLeNet",
    "GoogLeNetConfig",
    "GoogLeNetOutput",
    "Inception",
    "LoadedModel",
    "WeightsError",
    "dream",
    "explain",
    "from_caffe",
    "from_torchvision",
    "googlenet",
    "googlenet_loss",
    "load",
    "optimize_for_inference",
    "predict",
    "save_explanations",
    "table1_cost",
    "visualize",
]
__version__ = "0.6.0"
