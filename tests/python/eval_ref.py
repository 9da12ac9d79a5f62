"""The evaluation metrics of the method document (section 7) in PyTorch: the oracle for
`parchgrad eval`. Written from the document, independently of the engine:

- pixels sorted by |A| (NaN -> 0) with torch.sort(stable=True): descending for MoRF, ascending
  for LeRF, ties in ascending row-major index;
- the first int(H*W*r) pixels set to 0 in every channel of the normalised input, all the copies
  of one image through the model as one batch;
- AOPC, LODDS, accuracy, fracdiff per ratio; deletion (MoRF removal) and insertion (MoRF pixels
  put onto a zero image) curves at fractions i/S with their trapezoidal areas;
- mu_in, mu_in_w, mu_out, mu_out_w against a box mask, and the pointing game (argmax of |A|,
  first index on ties, inside the mask).
"""
import numpy as np
import torch


def clean(A):
    return torch.nan_to_num(torch.as_tensor(A, dtype=torch.float32), nan=0.0).abs().flatten()


def pixel_order(A, order):
    a = clean(A)
    return torch.sort(a, descending=(order == "morf"), stable=True).indices


def count_for(hw, r):
    return int(hw * r)


@torch.no_grad()
def probs_of(model, batch):
    return torch.softmax(model(batch), dim=1)


def removed(x, idx, count):
    xr = x.clone().reshape(x.shape[0], -1)
    xr[:, idx[:count]] = 0
    return xr.reshape(x.shape)


def kept(x, idx, count):
    xr = torch.zeros_like(x).reshape(x.shape[0], -1)
    src = x.reshape(x.shape[0], -1)
    xr[:, idx[:count]] = src[:, idx[:count]]
    return xr.reshape(x.shape)


@torch.no_grad()
def evaluate(model, x, y, A, ratios, steps, mask=None):
    """x: [3, H, W] normalised; y: label; A: [H, W]; mask: [H, W] bool or None."""
    C, H, W = x.shape
    hw = H * W
    p0 = probs_of(model, x[None])[0]
    yhat = int(torch.argmax(p0))
    morf, lerf = pixel_order(A, "morf"), pixel_order(A, "lerf")
    copies = [removed(x, morf, count_for(hw, r)) for r in ratios]
    copies += [removed(x, lerf, count_for(hw, r)) for r in ratios]
    fr = [i / steps for i in range(steps + 1)]
    copies += [removed(x, morf, count_for(hw, f)) for f in fr]
    copies += [kept(x, morf, count_for(hw, f)) for f in fr]
    pr = probs_of(model, torch.stack(copies))
    out = {"p0": float(p0[y]), "pred": yhat}
    at = 0
    for order in ("morf", "lerf"):
        rec = {"aopc": [], "lodds": [], "acc": [], "fracdiff": [], "prob": []}
        for _ in ratios:
            p = pr[at]
            at += 1
            rec["aopc"].append(float(p0[y] - p[y]))
            rec["lodds"].append(float(torch.log(p[y] / (p0[y] + 1e-10))))
            rec["acc"].append(int(int(torch.argmax(p)) == y))
            rec["fracdiff"].append(float(torch.abs(p0[yhat] - p[yhat])))
            rec["prob"].append(float(p[y]))
        rec["aopc_mean"] = float(np.mean(rec["aopc"]))
        # The runner-up margin of each copy, to tell a float32 near-tie from a real difference.
        out[order] = rec
    for curve in ("deletion", "insertion"):
        p = [float(pr[at + i][y]) for i in range(len(fr))]
        at += len(fr)
        out[curve] = {"fractions": fr, "prob": p, "auc": float(np.trapz(p, fr))}
    top2 = torch.topk(pr, 2, dim=1).values
    out["min_top2_margin"] = float((top2[:, 0] - top2[:, 1]).min())
    if mask is not None:
        m = torch.as_tensor(mask, dtype=torch.bool).flatten()
        a = clean(A).double()
        area = int(m.sum())
        r_tot = float(a.sum())
        if area == 0 or area == hw or r_tot == 0:
            out["box"] = {"status": "invalid", "area": area}
        else:
            mu_in = float(a[m].sum()) / r_tot
            out["box"] = {"status": "ok", "area": area, "mu_in": mu_in, "mu_in_w": mu_in * hw / area,
                          "mu_out": 1 - mu_in, "mu_out_w": (1 - mu_in) * hw / (hw - area),
                          "pointing": bool(m[int(torch.argmax(clean(A)))])}
    return out


def box_mask(H, W, boxes):
    """Union of boxes [x0, y0, x1, y1] in the input's continuous pixel coordinates: pixel (i, j)
    is inside when its centre (i + 0.5, j + 0.5) is in [x0, x1) x [y0, y1)."""
    m = np.zeros((H, W), dtype=bool)
    cx = np.arange(W) + 0.5
    cy = np.arange(H) + 0.5
    for x0, y0, x1, y1 in boxes:
        m |= ((cy[:, None] >= y0) & (cy[:, None] < y1)) & ((cx[None, :] >= x0) & (cx[None, :] < x1))
    return m
