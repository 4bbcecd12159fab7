using KataAgent.Testing;

namespace KataAgent.Core.Tests;

/// <summary>The test network index lock is exclusive while held and free again once released.</summary>
public sealed class TestNetworkLockTests
{
    [Fact]
    public void A_held_index_is_not_handed_out_again_until_it_is_released()
    {
        // One index, below the Core fixtures' 192-255, so no fixture of this process competes for it.
        var plan = new TestNetworkPlan("ktl", 209, 32000, 1, 191, 1);
        using (var held = TestNetwork.Take(plan))
        {
            Assert.Equal(191, held.Index);
            var refused = Assert.Throws<InvalidOperationException>(() => TestNetwork.Take(plan));
            Assert.Contains("191-191", refused.Message, StringComparison.Ordinal);
        }
        using var again = TestNetwork.Take(plan);
        Assert.Equal(191, again.Index);
    }
}
