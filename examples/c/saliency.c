/* Saliency maps of image files through parchgrad's C API.
 *
 *   saliency_c WEIGHTS OUT_DIR [--set NAME=VALUE]... IMAGE...
 *
 * For each image: read it, preprocess it as the command line does (the model's own preset:
 * 224 x 224 for a ResNet), explain its top-1 class, print the class and
 * write OUT_DIR/<image stem>.npy (H x W float32), the file `parchgrad saliency` writes for the
 * same image and settings. --set takes the command line's saliency flags: --set method=ig
 * --set parchgrad=cls --set stats=S.safetensors.
 *
 * Build against an installed package:
 *   cc -std=c99 saliency.c $(pkg-config --cflags --libs parchgrad) -o saliency_c
 * or with CMake: find_package(parchgrad CONFIG REQUIRED), target parchgrad::parchgrad. */
#include <parchgrad/parchgrad.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A float32 array as numpy's .npy (version 1.0, C order). */
static int save_npy(const char* path, const float* data, int h, int w) {
  char header[128];
  int len = snprintf(header, sizeof header, "{'descr': '<f4', 'fortran_order': False, 'shape': (%d, %d), }", h, w);
  int total = 10 + len + 1;
  int pad = (64 - total % 64) % 64;
  unsigned short hlen = (unsigned short)(len + pad + 1);
  FILE* f = fopen(path, "wb");
  if (!f) return -1;
  fwrite("\x93NUMPY\x01\x00", 1, 8, f);
  fputc(hlen & 0xff, f);
  fputc(hlen >> 8, f);
  fwrite(header, 1, (size_t)len, f);
  for (int i = 0; i < pad; ++i) fputc(' ', f);
  fputc('\n', f);
  size_t n = fwrite(data, sizeof(float), (size_t)h * (size_t)w, f);
  return fclose(f) == 0 && n == (size_t)h * (size_t)w ? 0 : -1;
}

/* "dir/star.png" -> "star" */
static void stem_of(const char* path, char* out, size_t size) {
  const char* base = strrchr(path, '/');
  base = base ? base + 1 : path;
  snprintf(out, size, "%s", base);
  char* dot = strrchr(out, '.');
  if (dot) *dot = '\0';
}

int main(int argc, char** argv) {
  if (argc < 4) {
    fprintf(stderr, "usage: %s WEIGHTS OUT_DIR [--set NAME=VALUE]... IMAGE...\n", argv[0]);
    return 2;
  }
  pg_model* model = NULL;
  if (pg_model_load(argv[1], NULL, "cpu", &model) != PG_OK) {
    fprintf(stderr, "error: %s\n", pg_last_error());
    return 1;
  }
  pg_saliency_options* opt = pg_saliency_options_new();
  int classes = pg_model_num_classes(model);
  /* The preprocessing torchvision's weights of this architecture define (a ResNet's: resize 256,
   * crop 224), the command line's default. */
  const char* preset = pg_model_preset(model);
  float* logits = malloc(sizeof(float) * (size_t)classes);
  int status = 0;
  printf("parchgrad %s, %s with %d classes\n", pg_version(), pg_model_arch(model), classes);
  for (int i = 3; i < argc; ++i) {
    if (strcmp(argv[i], "--set") == 0 && i + 1 < argc) {
      char name[64];
      const char* eq = strchr(argv[i + 1], '=');
      size_t n = eq ? (size_t)(eq - argv[i + 1]) : strlen(argv[i + 1]);
      snprintf(name, sizeof name, "%.*s", (int)n, argv[i + 1]);
      if (pg_saliency_options_set(opt, name, eq ? eq + 1 : NULL) != PG_OK) {
        fprintf(stderr, "error: %s\n", pg_last_error());
        status = 1;
        break;
      }
      ++i;
      continue;
    }
    unsigned char* rgb = NULL;
    int h = 0, w = 0, xh = 0, xw = 0;
    float* x = NULL;
    float* map = NULL;
    if (pg_image_read(argv[i], &rgb, &h, &w) != PG_OK || pg_preprocess_shape(h, w, preset, -1, -1, &xh, &xw) != PG_OK) {
      fprintf(stderr, "error: %s\n", pg_last_error());
      pg_free(rgb);
      status = 1;
      continue;
    }
    x = malloc(sizeof(float) * 3 * (size_t)xh * (size_t)xw);
    map = malloc(sizeof(float) * (size_t)xh * (size_t)xw);
    if (!x || !map || pg_preprocess_preset_u8(rgb, h, w, preset, -1, -1, NULL, x) != PG_OK ||
        pg_saliency(model, x, 1, xh, xw, NULL, opt, map, logits) != PG_OK) {
      fprintf(stderr, "error: %s\n", x && map ? pg_last_error() : "out of memory");
      pg_free(rgb);
      free(x);
      free(map);
      status = 1;
      continue;
    }
    pg_free(rgb);
    free(x);
    int top = 0;
    for (int k = 1; k < classes; ++k)
      if (logits[k] > logits[top]) top = k;
    char stem[256], out[1024];
    stem_of(argv[i], stem, sizeof stem);
    snprintf(out, sizeof out, "%s/%s.npy", argv[2], stem);
    if (save_npy(out, map, xh, xw) != 0) {
      fprintf(stderr, "error: cannot write %s\n", out);
      free(map);
      status = 1;
      continue;
    }
    free(map);
    const char* name = pg_model_class_name(model, top);
    printf("%s: class %d (%s), map in %s\n", argv[i], top, name ? name : "?", out);
  }
  free(logits);
  pg_saliency_options_free(opt);
  pg_model_free(model);
  return status;
}
