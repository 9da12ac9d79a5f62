// Bounding boxes for the localisation metrics: Pascal VOC XML (ImageNet's validation
// annotations), the synthetic data set's boxes.jsonl, and the mapping of a box through the
// eval transform (resize the short side, centre crop) into the model input's pixels.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace pg::io {

// A box in continuous pixel coordinates of the original image: it covers [x0, x1) x [y0, y1)
// where pixel (i, j) spans [i, i+1) x [j, j+1). VOC's 1-based inclusive xmin..xmax becomes
// [xmin - 1, xmax); boxes.jsonl's [x0, y0, x1, y1] (x1/y1 exclusive) is taken as it is.
struct Box {
  double x0 = 0, y0 = 0, x1 = 0, y1 = 0;
};

// Where the eval transform puts the original image: resized to (resized_w, resized_h), then
// the crop window starts at (left, top) of the resized image (negative: zero padding).
struct CropGeometry {
  int orig_w = 0, orig_h = 0, resized_w = 0, resized_h = 0, left = 0, top = 0, crop_w = 0, crop_h = 0;
};
// torchvision Resize(resize) + CenterCrop(crop); resize = 0 means no resize (a .npy input or
// an image already at the crop size is taken as it is: identity geometry).
CropGeometry eval_geometry(int orig_w, int orig_h, int resize, int crop);
CropGeometry identity_geometry(int w, int h);

// The box in the crop's continuous coordinates, clipped to [0, crop]. Empty (x1 <= x0 or
// y1 <= y0) when the box lies outside the crop.
Box map_box(const Box& b, const CropGeometry& g);

// Adds the pixels of the crop whose centres lie inside the mapped box to mask (crop_h x
// crop_w bytes): pixel i is inside when x0 <= i + 0.5 < x1. Returns the pixels added.
int64_t rasterize_box(const Box& mapped, int crop_w, int crop_h, std::vector<uint8_t>& mask);

// One image's annotation: the image size it was made for (0 if not recorded) and its boxes.
struct Annotation {
  int width = 0, height = 0;
  std::vector<Box> boxes;
};

// Pascal VOC XML (<annotation><size><width/><height/></size><object><bndbox><xmin/>...). Every
// object's box, whatever its class. Throws pg::Error "<path>: <problem>" on broken XML,
// missing or non-numeric coordinates, and boxes with xmax < xmin or outside the stated size.
Annotation read_voc_xml(const std::string& path);

// boxes.jsonl: one JSON object per line with "file" (relative to the file's directory) and
// "box": [x0, y0, x1, y1] or "boxes": [[...], ...]; optional "label". Keys are normalised
// relative paths. Throws naming the file and line.
struct JsonlAnnotation {
  std::vector<Box> boxes;
  int label = -1;
};
std::map<std::string, JsonlAnnotation> read_boxes_jsonl(const std::string& path);

}  // namespace pg::io
