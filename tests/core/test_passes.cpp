// The pass registry and plan_for: passes found by name, applied in order, the same as by hand.
#include <gtest/gtest.h>

#include "twinbed/core/error.hpp"
#include "twinbed/core/experiment.hpp"
#include "twinbed/core/passes.hpp"
#include "twinbed/core/passes/dsa.hpp"
#include "twinbed/core/passes/lora.hpp"
#include "twinbed/core/passes/precision.hpp"
#include "twinbed/core/passes/tgc.hpp"
#include "twinbed/core/passes/zrdf.hpp"

using namespace twinbed;
using nlohmann::json;

namespace {

json config(const json& techniques) {
  return {{"name", "t"},
          {"cluster", {{"topology", "nvswitch-node"}, {"ranks", 8}}},
          {"model", {{"layers", 4}, {"hidden", 256}, {"heads", 8}, {"seq_len", 128}, {"vocab", 1024}}},
          {"layout", {{"dp", 2}, {"tp", 2}, {"pp", 2}, {"global_batch", 8}, {"zero_stage", 1}}},
          {"techniques", techniques}};
}

std::string error_path(const json& c) {
  try {
    plan_for(experiment_from_json(c, "."));
  } catch (const ConfigError& e) {
    return e.path();
  }
  return "no error";
}

}  // namespace

TEST(Passes, RegistryListsEveryTechniqueInItsOrder) {
  EXPECT_EQ(technique_passes().names(), (std::vector<std::string>{"lora", "precision", "dsa", "tgc", "zrdf"}));
  EXPECT_EQ(accepted_techniques(), technique_passes().names());
}

TEST(Passes, PlanForAppliesThePassesInOrderAsByHand) {
  const json all = json::array({{{"pass", "lora"}, {"rank", 4}, {"targets", {"qkv", "fc2"}}},
                                {{"pass", "precision"}, {"overrides", {{{"ops", "attention"}, {"dtype", "fp32"}}}}},
                                {{"pass", "dsa"}, {"density", 0.5}, {"targets", {"fc1"}}},
                                {{"pass", "tgc"}, {"bits", 8}},
                                {{"pass", "zrdf"}}});
  const Experiment e = experiment_from_json(config(all), ".");
  const Plan plan = plan_for(e);
  EXPECT_EQ(plan.passes, (std::vector<std::string>{"lora", "precision", "dsa", "tgc", "zrdf"}));

  Plan by_hand = build_plan(e.model, e.layout, cluster_shape(build_topology(e.cluster)));
  apply_lora(by_hand, lora_params_from_json(all[0], ""));
  apply_precision(by_hand, precision_params_from_json(all[1], ""));
  apply_dsa(by_hand, dsa_params_from_json(all[2], ""));
  apply_tgc(by_hand, tgc_params_from_json(all[3], ""));
  apply_zrdf(by_hand, zrdf_params_from_json(all[4], ""));
  by_hand.passes = plan.passes;
  EXPECT_EQ(plan, by_hand);
}

TEST(Passes, NeutralSettingsLeaveThePlanAsBuilt) {
  const json neutral = json::array({{{"pass", "lora"}, {"rank", 0}},
                                    {{"pass", "precision"}},
                                    {{"pass", "dsa"}, {"density", 1}},
                                    {{"pass", "tgc"}},
                                    {{"pass", "zrdf"}, {"planner", "none"}}});
  Plan plan = plan_for(experiment_from_json(config(neutral), "."));
  Plan built = plan_for(experiment_from_json(config(json::array()), "."));
  built.passes = plan.passes;
  EXPECT_EQ(plan, built);
}

TEST(Passes, OrderAndParameterErrorsNameTheEntry) {
  EXPECT_EQ(error_path(config(json::array({{{"pass", "tgc"}, {"bits", 8}}, {{"pass", "lora"}}}))), "/techniques/1");
  EXPECT_EQ(error_path(config(json::array({{{"pass", "zrdf"}}, {{"pass", "zrdf"}}}))), "/techniques/1");
  EXPECT_EQ(error_path(config(json::array({{{"pass", "dsa"}, {"density", 0.5}, {"targets", {"expert_fc1"}}}}))),
            "/techniques/0/targets/0");  // the model has no experts: found when applied to the plan
  EXPECT_EQ(error_path(config(json::array({{{"pass", "nope"}}}))), "/techniques/0/pass");
  EXPECT_EQ(error_path(config(json::array({{{"rank", 4}}}))), "/techniques/0/pass");
}
