"""Probe a tuning run's teacher: k-NN of class, object hue, position and size vs raw pixels.

    python notes/dino_probe.py RUN_NAME '{"contrast": [0.03, 0.08]}'   # the run's --scenes
"""
import json, sys, torch
sys.path.insert(0, "notes")
from dino_tune import scenes, BASE_VIT
from vislearn.dino import DINO
from vislearn.vit import VisionTransformer, ViTConfig
from vislearn.evaluation import extract_features, knn_accuracy
torch.set_num_threads(1)
name = sys.argv[1]
r = json.load(open(f"/tmp/dino/runs/{name}.json"))
train, test = scenes(20000, 2000, 0, json.loads(sys.argv[2]))
vit = VisionTransformer(ViTConfig(**r["model"]))
c = r["cfg"]
dino = DINO(vit, c["out_dim"], hidden_dim=c["hidden_dim"], bottleneck_dim=c["bottleneck_dim"], norm_last_layer=c["norm_last_layer"])
dino.load_state_dict(torch.load(f"/tmp/dino/runs/{name}.pt"))
bb = dino.teacher_backbone
B, T = train.subset(range(4000)), test.subset(range(1000))
fb, ft = extract_features(bb, B.images), extract_features(bb, T.images)
def hue(s):  # mean colour of the object pixels -> hue bin
    img = s.images * torch.tensor([0.183,0.172,0.175]).view(1,3,1,1) + torch.tensor([0.398,0.376,0.359]).view(1,3,1,1)
    m = s.masks[:,None].float()
    col = (img*m).sum((2,3))/m.sum((2,3)).clamp(min=1)
    h = torch.atan2(col[:,1]-col[:,2], 2*col[:,0]-col[:,1]-col[:,2])
    return ((h + torch.pi) / (2*torch.pi) * 8).long().clamp(max=7)
def pos(s):
    b = s.boxes.float(); cy = b[:,0]+b[:,2]/2; cx=b[:,1]+b[:,3]/2
    return ((cy/64*3).long().clamp(max=2)*3 + (cx/64*3).long().clamp(max=2))
def size(s):
    return ((s.boxes[:,2]-32)/17*4).long().clamp(0,3)
for nm, f in [("class", lambda s: s.labels), ("hue8", hue), ("pos3x3", pos), ("size4", size)]:
    yb, yt = f(B), f(T)
    chance = torch.bincount(yt).max().item()/len(yt)
    raw = knn_accuracy(B.images.flatten(1), yb, T.images.flatten(1), yt)
    print(f"{nm:8s} dino {knn_accuracy(fb, yb, ft, yt):.3f}  raw {raw:.3f}  majority {chance:.3f}")
