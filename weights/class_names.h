// Class names for a model's outputs.
#pragma once
#include <string>
#include <vector>

namespace pg::weights {

const std::vector<std::string>& imagenet_class_names();

// Class names for a model with num_classes outputs: those in classes_file (one per line)
// when given; else a classes.txt beside the weights file when it has num_classes lines;
// else the ImageNet names when num_classes is 1000; else empty.
std::vector<std::string> class_names_for(const std::string& weights_path, const std::string& classes_file,
                                         int num_classes);

}  // namespace pg::weights
