/* parchgrad.h: the C API of parchgrad (libparchgrad.so / libparchgrad.a).
 *
 * Saliency maps of torchvision ResNet and VGG classifiers, with or without ParchGrad, from a
 * C, C++, Rust, Go, Python (ctypes) or JVM program. The same engine and the same option
 * table as the `parchgrad` command line: an option set here with pg_saliency_options_set has
 * the command line's flag name, values and default, and gives the same maps bit for bit.
 *
 * C99, no C++ types; every symbol starts with pg_ (types pg_, macros PG_).
 *
 * Results. Every function returning int returns PG_OK (0) on success and one of the PG_ERR_
 * codes below otherwise; pg_last_error() then holds a one-line message that says what was
 * wrong (naming the file, option or argument). No function aborts the process, prints, or
 * lets a C++ exception out; on failure no output buffer holds a partial result that should
 * be used (its content is unspecified) and no object was created.
 *
 * Ownership. The caller owns every buffer it passes (inputs are only read during the call and
 * not kept; outputs are written during the call). Objects made by the library (pg_model,
 * pg_saliency_options, pixel buffers of pg_image_read) are owned by the caller until given
 * back with their _free function; freeing NULL does nothing. Strings returned as const char*
 * are the library's and must not be freed: pg_version, pg_build_info and pg_model_* strings
 * live as long as the library (or the model); pg_last_error's until the next failing call in
 * the same thread.
 *
 * Threads. The library starts no thread of its own outside a call (calls use OpenMP threads
 * for their arithmetic and return when done).
 *   - pg_version, pg_build_info, pg_has_device, pg_last_error, pg_preprocess_u8,
 *     pg_preprocess_shape, pg_preprocess_preset_u8, pg_image_read: any thread, at any
 *     time. pg_last_error is thread-local.
 *   - One pg_model on the CPU: any number of threads may run pg_saliency,
 *     pg_saliency_targets, pg_stats and pg_stats_run on it at the same time (the model is only read; each
 *     call has its own pass state), and several models may be used at once. The maps do not
 *     depend on which calls run concurrently, nor on the batch a sample is in.
 *   - Models on a CUDA device: calls may come from any thread. Calls on one device run one at
 *     a time (the library serialises them); calls on different devices ("cuda:0", "cuda:1")
 *     run at the same time. A call leaves its device current for the calling thread.
 *   - pg_model_free must not run while another call uses that model.
 *   - A pg_saliency_options is only read by saliency calls, so one object may serve
 *     concurrent calls; pg_saliency_options_set and _free must not run concurrently with any
 *     other use of that object. The same holds for a pg_stats_options and pg_stats_run.
 */
#ifndef PARCHGRAD_PARCHGRAD_H
#define PARCHGRAD_PARCHGRAD_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

#define PG_VERSION_MAJOR 0
#define PG_VERSION_MINOR 1
#define PG_VERSION_PATCH 0

/* Result codes. */
#define PG_OK 0
/* A bad argument: a NULL pointer where one is required, a count or size out of range, an
 * unknown option name or value, a target class out of range, an input the model cannot take,
 * statistics that do not fit the model. */
#define PG_ERR_ARGUMENT 1
/* A file is missing, unreadable, or not what it should be (weights, statistics, images,
 * .npy files, a folder of images). */
#define PG_ERR_FILE 2
/* The device asked for is not compiled in, or cannot be used. */
#define PG_ERR_DEVICE 3
/* Out of memory. */
#define PG_ERR_MEMORY 4
/* Anything else: an unexpected failure inside the library (the message says what). */
#define PG_ERR_INTERNAL 5

typedef struct pg_model pg_model;                         /* a loaded classifier (opaque) */
typedef struct pg_saliency_options pg_saliency_options;   /* saliency settings (opaque) */
typedef struct pg_stats_options pg_stats_options;         /* dataset statistics settings (opaque) */

/* The library's version, "MAJOR.MINOR.PATCH". */
const char* pg_version(void);

/* Version and build information as one line of JSON: {"version": "0.1.0", "devices": ["cpu",
 * "cuda"], "device_backend": "none" | "cuda" | "simt", "compiler": "...", "openmp": 201511}.
 * "devices" lists the devices compiled in ("cuda" only when a device backend is). */
const char* pg_build_info(void);

/* 1 when `device` ("cpu", "cuda") is compiled into this build, else 0 (a compiled-in device
 * may still be absent from the machine: pg_model_load says so). */
int pg_has_device(const char* device);

/* The message of the calling thread's last failure ("" when none failed yet). */
const char* pg_last_error(void);

/* ---- Models ---- */

/* Loads a torchvision state dict (.pth, zip or legacy format, or .safetensors) and builds the
 * model on a device. arch: "resnet18" ... "resnet152", "vgg11" ... "vgg19", "vgg11_bn" ...
 * "vgg19_bn", or NULL (or "") to infer it from the tensor names and shapes. device: "cpu"
 * (also NULL or ""), "cuda" (device 0) or "cuda:I". On success *out is a new model (free it
 * with pg_model_free); on failure *out is NULL. */
int pg_model_load(const char* weights, const char* arch, const char* device, pg_model** out);
void pg_model_free(pg_model* m);

/* The number of classes (-1 for NULL). */
int pg_model_num_classes(const pg_model* m);
/* The architecture's name, e.g. "resnet18" (NULL for NULL). */
const char* pg_model_arch(const pg_model* m);
/* Class k's name: ImageNet's for a 1000-class model, else from classes.txt beside the
 * weights file; NULL when the model has no names or k is out of range. */
const char* pg_model_class_name(const pg_model* m, int k);
/* The name of the model's own preprocessing preset, what the command line uses by default and
 * pg_preprocess_preset_u8 takes: its torchvision weights' name ("ResNet50_Weights.IMAGENET1K_V1")
 * or "imagenet" for an architecture torchvision has no weights of (NULL for NULL). */
const char* pg_model_preset(const pg_model* m);

/* ---- Saliency options: the command line's flags of `parchgrad saliency` ---- */

/* New options holding the command line's defaults (grad, ParchGrad off, ...). NULL only when
 * out of memory. */
pg_saliency_options* pg_saliency_options_new(void);
void pg_saliency_options_free(pg_saliency_options* o);

/* Sets one option by the command line's flag name, without or with its leading "--", to a
 * value written as on the command line: ("method", "ig"), ("parchgrad", "cls"),
 * ("stats", "/path/stats.safetensors"), ("alpha", "0.05"), ("gamma", "inf"),
 * ("layers", "layer34"). A flag without a value (e.g. "exact-variance",
 * "no-variance-conservation", "deterministic") is set by NULL, "", "true" or "1" and cleared
 * by "false" or "0". Files named by an option ("stats", "sg-noise", "ig-baseline") are read
 * here, once, and checked. The value is checked as the command line checks it; on failure the
 * options are unchanged. Options of the command line's file output (--out, --colormap,
 * --compare, ...), of the model (--weights, --model, --device, --gpu) and of the images'
 * preprocessing (--preprocess, --resize, --crop, --interpolation: pg_preprocess_preset_u8) are
 * not saliency options: they are refused by name. The list of names: README.md, "Embedding". */
int pg_saliency_options_set(pg_saliency_options* o, const char* name, const char* value);

/* ---- Saliency ---- */

/* Maps of a batch x [n x 3 x h x w], normalised as the model expects (pg_preprocess_u8), for
 * one target per sample: targets[i] is a class id in [0, classes), or -r for the sample's
 * r-th ranked class (-1: its top-1); targets NULL: every sample's top-1. o NULL: the
 * defaults. maps [n x h x w] receives the maps (as the command line's .npy files hold them);
 * logits [n x classes] the model's logits of the clean inputs, or NULL. */
int pg_saliency(pg_model* m, const float* x, int n, int h, int w, const int* targets,
                const pg_saliency_options* o, float* maps, float* logits);

/* Several targets per sample from one forward pass (grad, inputgrad and gradcam: one forward,
 * one backward per target set): targets [k x n], set j holding one target per sample (as in
 * pg_saliency; the command line's --target top3 is the sets {-1..}, {-2..}, {-3..}).
 * maps [k x n x h x w]; resolved [k x n] receives the class ids the targets resolved to, or
 * NULL; logits as in pg_saliency. */
int pg_saliency_targets(pg_model* m, const float* x, int n, int h, int w, const int* targets, int k,
                        const pg_saliency_options* o, float* maps, int* resolved, float* logits);

/* ---- Inputs ---- */

/* The command line's preprocessing of an 8-bit RGB image (rows of width x 3 bytes, any size):
 * torchvision's Resize(size * 256 / 224) with PIL's antialiased bilinear filter, CenterCrop
 * (size), ToTensor and Normalize with the ImageNet mean and std, bit for bit. x receives
 * [3 x size x size] floats. size 224 is the ImageNet eval transform (resize 256). */
int pg_preprocess_u8(const unsigned char* rgb, int height, int width, int size, float* x);

/* Any model's preprocessing, as torchvision's weights define it (the command line's
 * --preprocess, --resize, --crop and --interpolation): preset is a torchvision weights name
 * ("EfficientNet_B0_Weights.IMAGENET1K_V1"), a model name ("convnext_tiny": its IMAGENET1K_V1
 * weights' transform), or "imagenet" (resize 256, crop 224, bilinear); NULL or "": "imagenet".
 * resize (the short side) and crop (a centre square) override the preset's when >= 0 (0: no
 * resize, no crop), -1 keeps them; interpolation "bilinear" or "bicubic" (PIL's antialiased
 * filters, bit for bit) overrides its filter, NULL keeps it. Normalised with the preset's mean
 * and std. pg_preprocess_shape gives the height and width of x for an image of height x width
 * (crop x crop when there is a crop); x receives [3 x out_height x out_width] floats. An unknown
 * preset or filter, or a size out of range: PG_ERR_ARGUMENT. */
int pg_preprocess_shape(int height, int width, const char* preset, int resize, int crop, int* out_height,
                        int* out_width);
int pg_preprocess_preset_u8(const unsigned char* rgb, int height, int width, const char* preset, int resize,
                            int crop, const char* interpolation, float* x);

/* Reads a PNG or JPEG file as 8-bit RGB, decoded as the command line decodes it (JPEG as PIL
 * does, greyscale replicated, alpha dropped). On success *rgb points to height x width x 3
 * bytes that the caller frees with pg_free; on failure *rgb is NULL. */
int pg_image_read(const char* path, unsigned char** rgb, int* height, int* width);
/* Frees a buffer the library allocated (pg_image_read); NULL does nothing. */
void pg_free(void* p);

/* ---- Dataset statistics (the command line's `parchgrad stats`) ---- */

/* Computes ParchGrad's statistics of model m over an ImageFolder tree data_dir (class folders
 * sorted by name give class ids 0, 1, ..., or labels names them: lines "folder class_id";
 * NULL for none) and writes them to out_path (safetensors, what the "stats" option reads).
 * test: "student" or "welch" (NULL: student); batch: images per forward pass (0: 16). Images
 * get the model's own preprocessing (pg_model_preset), recorded in the file. The
 * same file as `parchgrad stats` with the same settings, bit for bit; an image that cannot be
 * read fails the call (as `parchgrad stats --strict` does), naming the file. Other settings,
 * the preprocessing among them: pg_stats_options and pg_stats_run. */
int pg_stats(pg_model* m, const char* data_dir, const char* labels, const char* test, int batch,
             const char* out_path);

/* Settings of a statistics run, set by the flag names of `parchgrad stats` (as
 * pg_saliency_options_set: without or with "--", values written as on the command line):
 * "test" (student or welch; default student), "batch" (images per forward pass; 0, the
 * default: 16), "labels" (a labels file as pg_stats takes it; "": none), and the images'
 * preprocessing: "preprocess" (a preset's name, as pg_preprocess_preset_u8 takes it; "", the
 * default: the model's own), "resize" and "crop" (-1, the default: the preset's; 0: none) and
 * "interpolation" (bilinear or bicubic; "": the preset's). A value is checked when it is set (an
 * unknown preset or filter, a bad number: PG_ERR_ARGUMENT naming it; the labels file is read by
 * pg_stats_run); on failure the options are unchanged. Other flags of `parchgrad stats` (--out,
 * --weights, --shard, ...) are refused by name. pg_stats_options_new: NULL only when out of
 * memory. */
pg_stats_options* pg_stats_options_new(void);
void pg_stats_options_free(pg_stats_options* o);
int pg_stats_options_set(pg_stats_options* o, const char* name, const char* value);

/* pg_stats with settings o (NULL: the defaults, as pg_stats(m, data_dir, NULL, NULL, 0,
 * out_path)): the same file as `parchgrad stats` with the same flags, bit for bit, the
 * preprocessing recorded in its metadata. */
int pg_stats_run(pg_model* m, const char* data_dir, const pg_stats_options* o, const char* out_path);

#ifdef __cplusplus
}
#endif

#endif /* PARCHGRAD_PARCHGRAD_H */
