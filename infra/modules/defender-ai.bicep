// The Defender for Cloud plan for AI services on the subscription: what raises the AI threat
// protection alerts Aegis ingests (jailbreaks, data exfiltration, wallet attacks...). Billed per
// 1,000 tokens scanned on the subscription's AI accounts (see the Defender for Cloud pricing page);
// `enableDefenderForAi=false` leaves the plan as it is, for a subscription that manages it elsewhere.
targetScope = 'subscription'

@description('Keep user prompts in the alerts as evidence (extension AIPromptEvidence): the prompt text leaves the AI account.')
param promptEvidence bool = false

resource ai 'Microsoft.Security/pricings@2024-01-01' = {
  // checkov:skip=CKV_AZURE_87: this is the plan for AI services, not Key Vault's; which other Defender plans a subscription runs is its owner's choice, not this pipeline's
  name: 'AI'
  properties: {
    pricingTier: 'Standard'
    extensions: [{ name: 'AIPromptEvidence', isEnabled: promptEvidence ? 'True' : 'False' }]
  }
}

output pricingTier string = ai.properties.pricingTier
